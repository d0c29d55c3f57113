// Node's vm.runInNewContext, for comparison with the computation service's fresh sandbox per run
// (benches/sandbox.rs). Prints runs per second and the median (p50) time of one run.
//
// Run: node crates/computation/benches/node_vm.js

'use strict';
const vm = require('node:vm');

function measure(name, code, runs) {
  for (let i = 0; i < Math.min(50, runs); i++) vm.runInNewContext(code, {});
  const times = new Array(runs);
  const start = process.hrtime.bigint();
  for (let i = 0; i < runs; i++) {
    const t = process.hrtime.bigint();
    vm.runInNewContext(code, {});
    times[i] = Number(process.hrtime.bigint() - t);
  }
  const total = Number(process.hrtime.bigint() - start);
  times.sort((a, b) => a - b);
  const p50 = times[Math.floor(runs / 2)];
  console.log(
    `node vm.runInNewContext ${name}: ${(runs / (total / 1e9)).toFixed(0)} runs/s, ` +
      `p50 ${(p50 / 1e3).toFixed(1)} µs (${runs} runs, node ${process.version})`,
  );
}

measure("'1+1'", '1+1', 2000);
measure('fib(25)', 'function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); } fib(25)', 100);
