// The page's copy of the event journal: entries in seq order, each seq at most once.

export class Journal {
  constructor(capacity = 2000) {
    this.capacity = capacity;
    this.entries = [];
    this.lastSeq = null; // null: nothing loaded yet
    this.listeners = new Set();
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(change) {
    for (const listener of this.listeners) listener(change);
  }

  /** Starts over after `seq` (the first load, or a runtime whose journal went back in time). */
  reset(seq) {
    this.entries = [];
    this.lastSeq = seq;
    this.emit({ type: 'reset' });
  }

  /** The seq range missing between what we have and `seq`, or null. */
  gapBefore(seq) {
    if (this.lastSeq === null || seq <= this.lastSeq + 1) return null;
    return { from: this.lastSeq + 1, to: seq - 1 };
  }

  /** Appends entries newer than the last one; older or repeated seqs are ignored. */
  add(entries) {
    const added = [];
    for (const entry of entries) {
      if (!Number.isInteger(entry?.seq)) continue;
      if (this.lastSeq !== null && entry.seq <= this.lastSeq) continue;
      this.lastSeq = entry.seq;
      this.entries.push(entry);
      added.push(entry);
    }
    const dropped = Math.max(0, this.entries.length - this.capacity);
    if (dropped) this.entries.splice(0, dropped);
    if (added.length || dropped) this.emit({ type: 'add', added, dropped });
    return added;
  }

  /** Marks seqs the runtime could not give back (shown in the list, never silently skipped). */
  markMissing(gap) {
    this.lastSeq = Math.max(this.lastSeq ?? 0, gap.to);
    this.emit({ type: 'missing', gap });
  }
}
