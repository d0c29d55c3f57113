// Small time-series charts (uPlot) for one service's recent figures.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { h } from './dom.js';
import { ms, percent } from './format.js';

const HEIGHT = 120;

/** The charts shown per service: what they plot from a history sample, and how. */
export const CHARTS = [
  {
    id: 'latency',
    title: 'Latency (last interval)',
    series: [
      { label: 'p50', value: (s) => s.p50, stroke: '#2563eb' },
      { label: 'p99', value: (s) => s.p99, stroke: '#c2410c' },
    ],
    format: ms,
  },
  {
    id: 'errors',
    title: 'Error rate',
    series: [{ label: 'errors', value: (s) => s.errorRate, stroke: '#b91c1c', fill: 'rgba(185, 28, 28, 0.12)' }],
    format: percent,
    range: [0, null],
  },
  {
    id: 'queue',
    title: 'Queue depth',
    series: [{ label: 'queued', value: (s) => s.queue, stroke: '#0f766e', fill: 'rgba(15, 118, 110, 0.12)' }],
    format: (v) => (v == null ? '–' : String(Math.round(v))),
    range: [0, null],
  },
];

function options(chart, width) {
  const axisFormat = (u, values) => values.map((v) => chart.format(v));
  return {
    width,
    height: HEIGHT,
    legend: { show: true, live: false },
    cursor: { drag: { x: false, y: false }, points: { show: false } },
    scales: {
      x: { time: true },
      y: { range: (u, min, max) => [chart.range ? 0 : Math.min(0, min ?? 0), Math.max(max ?? 0, chart.id === 'errors' ? 0.01 : 1)] },
    },
    axes: [
      { stroke: '#64748b', grid: { stroke: '#e2e8f0' }, ticks: { stroke: '#e2e8f0' }, font: '11px system-ui, sans-serif' },
      { stroke: '#64748b', grid: { stroke: '#e2e8f0' }, ticks: { stroke: '#e2e8f0' }, values: axisFormat, size: 64, font: '11px system-ui, sans-serif' },
    ],
    series: [
      {},
      ...chart.series.map((s) => ({ label: s.label, stroke: s.stroke, fill: s.fill, width: 1.5, spanGaps: false, points: { show: false }, value: (u, v) => chart.format(v) })),
    ],
  };
}

function dataOf(chart, samples) {
  return [samples.map((s) => s.t), ...chart.series.map((series) => samples.map((s) => series.value(s) ?? null))];
}

/** The newest value of each series, for the chart's accessible label. */
function describe(chart, samples, service) {
  const last = samples[samples.length - 1];
  const now = last ? chart.series.map((s) => `${s.label} ${chart.format(s.value(last))}`).join(', ') : 'no samples yet';
  return `${chart.title} of ${service} over the last ${samples.length} samples; now ${now}`;
}

export class ChartSet {
  constructor(container, service) {
    this.service = service;
    this.charts = CHARTS.map((chart) => {
      const box = h('figure', { class: 'chart', testid: `chart-${chart.id}`, role: 'img' }, h('figcaption', {}, chart.title));
      container.append(box);
      return { chart, box, plot: null };
    });
  }

  update(samples) {
    for (const entry of this.charts) {
      const data = dataOf(entry.chart, samples);
      entry.box.setAttribute('aria-label', describe(entry.chart, samples, this.service));
      const width = Math.max(200, Math.floor(entry.box.clientWidth || 300));
      if (!entry.plot) {
        entry.plot = new uPlot(options(entry.chart, width), data, entry.box);
      } else {
        if (Math.abs(entry.plot.width - width) > 2) entry.plot.setSize({ width, height: HEIGHT });
        entry.plot.setData(data);
      }
    }
  }

  destroy() {
    for (const entry of this.charts) entry.plot?.destroy();
    this.charts = [];
  }
}
