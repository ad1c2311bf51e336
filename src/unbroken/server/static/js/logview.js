// The live log of a trial: the newest attempt's log, followed as it grows and, when that attempt
// ends and a new one starts (a restart), on into the new attempt's log after a separator line.
import {token} from "./api.js";

export class LogView {
  constructor(pre, ref) { Object.assign(this, {pre, ref, attempt: null, offset: 0, busy: false}); }

  async fetchChunk() {
    const path = `/api/trials/${this.ref}/attempts/${this.attempt}/log?offset=${this.offset}`;
    const res = await fetch(path, {headers: token() ? {"X-Unbroken-Token": token()} : {}});
    if (!res.ok) return {text: "", state: "running", grew: false};
    const start = Number(res.headers.get("X-Offset")), next = Number(res.headers.get("X-Next-Offset"));
    if (start < this.offset) this.pre.textContent = "";   // truncated or replaced: start over
    this.offset = next;
    return {text: await res.text(), state: res.headers.get("X-State"), grew: next > start};
  }

  append(text) {
    if (!text) return;
    const atEnd = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 4;
    this.pre.textContent += text;
    if (atEnd) this.pre.scrollTop = this.pre.scrollHeight;
  }

  // Called on every poll with the trial's attempts (ATTEMPT objects, oldest first).
  async update(attempts) {
    if (!attempts.length || this.busy) return;
    this.busy = true;
    try {
      if (this.attempt == null) this.attempt = attempts[attempts.length - 1].number;
      let chunk = await this.fetchChunk();
      this.append(chunk.text);
      const newest = attempts[attempts.length - 1].number;
      while (!chunk.grew && this.attempt < newest) {   // this one is done: follow the restart
        this.attempt += 1; this.offset = 0;
        this.append(`\n==> attempt ${this.attempt} <==\n`);
        chunk = await this.fetchChunk();
        this.append(chunk.text);
      }
      this.pre.dataset.attempt = String(this.attempt);
    } finally { this.busy = false; }
  }
}
