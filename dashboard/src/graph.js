// The dependency graph: one column per start layer (layer 0 on the left), arrows from a service to
// what it depends on. Layout by dagre; nodes are buttons (focusable, with tooltips), edges an SVG.
import * as dagre from '@dagrejs/dagre';
import { h, setText } from './dom.js';

const NODE_W = 190;
const NODE_H = 44;
const TOP = 28; // room for the layer labels
const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

/** Node positions and edge routes for services with `layer` and `dependencies`. */
export function layout(services) {
  const names = new Set(services.map((s) => s.name));
  const g = new dagre.graphlib.Graph();
  // Edges run dependent -> dependency, and longest-path ranking puts every service one rank past
  // its deepest dependency: exactly its start layer. 'RL' draws rank order right to left, so
  // layer 0 (services without dependencies) ends up in the leftmost column.
  g.setGraph({ rankdir: 'RL', ranker: 'longest-path', nodesep: 10, ranksep: 56, marginx: 12, marginy: 8 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const s of services) g.setNode(s.name, { width: NODE_W, height: NODE_H });
  for (const s of services) {
    for (const d of s.dependencies ?? []) if (names.has(d)) g.setEdge(s.name, d);
  }
  dagre.layout(g);
  const nodes = new Map();
  for (const s of services) {
    const n = g.node(s.name);
    nodes.set(s.name, { x: n.x - NODE_W / 2, y: n.y - NODE_H / 2 + TOP, layer: s.layer });
  }
  const edges = g.edges().map((e) => ({
    from: e.v,
    to: e.w,
    points: g.edge(e).points.map((p) => ({ x: p.x, y: p.y + TOP })),
  }));
  // Column labels: the x of each layer's nodes.
  const columns = new Map();
  for (const { x, layer } of nodes.values()) if (!columns.has(layer)) columns.set(layer, x);
  const { width, height } = g.graph();
  return { nodes, edges, columns, width: Math.max(width, NODE_W + 24), height: height + TOP };
}

function pathOf(points) {
  if (points.length < 2) return '';
  let d = `M${points[0].x},${points[0].y}`;
  for (let i = 1; i < points.length - 1; i++) {
    const p = points[i];
    const next = points[i + 1];
    d += ` Q${p.x},${p.y} ${(p.x + next.x) / 2},${(p.y + next.y) / 2}`;
  }
  const last = points[points.length - 1];
  return `${d} L${last.x},${last.y}`;
}

function topologyKey(services) {
  return services.map((s) => `${s.name}@${s.layer}:${(s.dependencies ?? []).join(',')}`).join('|');
}

export function healthText(service) {
  const health = service.health ?? {};
  return health.reason ? `${health.level}: ${health.reason}` : health.level ?? 'unknown';
}

export class GraphView {
  constructor(container, onSelect) {
    this.container = container;
    this.onSelect = onSelect;
    this.key = null;
    this.nodes = new Map(); // name -> button
    this.edges = [];
    this.selected = null;
  }

  update(services, selected) {
    if (!services.length) {
      this.container.replaceChildren(h('p', { class: 'msg msg-empty' }, 'No services are registered.'));
      this.key = null;
      return;
    }
    const key = topologyKey(services);
    if (key !== this.key) this.build(services);
    this.key = key;
    for (const s of services) {
      const node = this.nodes.get(s.name);
      if (!node) continue;
      const health = s.health?.level ?? 'unknown';
      node.className = `node state-${s.state} health-${health}${s.name === selected ? ' selected' : ''}`;
      node.setAttribute('aria-pressed', String(s.name === selected));
      node.setAttribute('aria-label', `${s.name}: ${s.state}, ${healthText(s)}`);
      node.title = `${s.name}\n${s.type} · ${s.startup_priority} priority · layer ${s.layer}\n${s.state}, ${healthText(s)}\nrestarts: ${s.restart_count}`;
      node.dataset.state = s.state;
      node.dataset.health = health;
      node.dataset.restarts = String(s.restart_count);
      setText(node.querySelector('.node-status'), `${s.state} · ${health}`);
    }
    for (const { el, from, to } of this.edges) {
      el.classList.toggle('active', from === selected || to === selected);
    }
    this.selected = selected;
  }

  build(services) {
    const { nodes, edges, columns, width, height } = layout(services);
    const canvas = h('div', { class: 'graph-canvas', testid: 'graph-canvas' });
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;

    const lines = svg('svg', { class: 'graph-edges', width, height, 'aria-hidden': 'true' });
    const defs = svg('defs');
    const marker = svg('marker', { id: 'arrow', viewBox: '0 0 8 8', refX: 7, refY: 4, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' });
    marker.append(svg('path', { d: 'M0,0 L8,4 L0,8 z', class: 'arrowhead' }));
    defs.append(marker);
    lines.append(defs);
    this.edges = edges.map((e) => {
      const el = svg('path', { d: pathOf(e.points), class: 'edge', 'marker-end': 'url(#arrow)' });
      lines.append(el);
      return { el, from: e.from, to: e.to };
    });
    canvas.append(lines);

    for (const [layer, x] of [...columns.entries()].sort((a, b) => a[0] - b[0])) {
      const label = h('div', { class: 'layer-label' }, `layer ${layer}`);
      label.style.left = `${x}px`;
      label.style.width = `${NODE_W}px`;
      canvas.append(label);
    }

    this.nodes = new Map();
    for (const s of services) {
      const pos = nodes.get(s.name);
      const node = h(
        'button',
        { type: 'button', class: 'node', testid: 'graph-node', 'data-name': s.name, onclick: () => this.onSelect(s.name) },
        h('span', { class: 'node-name' }, s.name),
        h('span', { class: 'node-status' }),
      );
      node.style.left = `${pos.x}px`;
      node.style.top = `${pos.y}px`;
      node.style.width = `${NODE_W}px`;
      node.style.height = `${NODE_H}px`;
      canvas.append(node);
      this.nodes.set(s.name, node);
    }
    this.container.replaceChildren(canvas);
  }
}
