// Bundles src/ into OUT_DIR/{index.html, app.js, app.css}: node build.mjs OUT_DIR
// Deterministic: the same sources and lockfile give the same bytes.
import { build } from 'esbuild';
import { copyFile, mkdir, readdir, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, '..', 'crates', 'api', 'assets'));
const OUTPUTS = ['index.html', 'app.js', 'app.css'];

await mkdir(out, { recursive: true });
// Exactly the three files: anything else left in the folder would be served by nobody and
// would make the check fail.
for (const name of await readdir(out)) {
  if (!OUTPUTS.includes(name)) await rm(join(out, name), { recursive: true, force: true });
}
await build({
  absWorkingDir: here,
  entryPoints: { app: 'src/main.js' },
  outdir: out,
  bundle: true,
  format: 'esm',
  minify: true,
  target: ['chrome110', 'firefox110', 'safari16'],
  charset: 'utf8',
  legalComments: 'eof',
  sourcemap: false,
  logLevel: 'warning',
});
await copyFile(join(here, 'src', 'index.html'), join(out, 'index.html'));
