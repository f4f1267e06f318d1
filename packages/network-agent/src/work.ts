// The idle-exit clock: the agent counts work (control requests, QubesDB events, DNS and
// uplink changes, firewall refreshes) and exits after `idleMs` without any. Pure timing,
// no I/O; `onIdle` is called once, when the agent should start its exit.
export class WorkClock {
  private inFlight = 0;
  private last = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private fired = false;

  constructor(private readonly idleMs: number, private readonly onIdle: () => void, private readonly busy: () => boolean = () => false) {}

  get lastWorkAt(): number {
    return this.last;
  }

  get working(): number {
    return this.inFlight;
  }

  /** Something happened that is work; the idle period starts over. */
  touch(): void {
    this.last = Date.now();
    this.arm();
  }

  /** Runs `fn` as work: the agent does not go idle while it runs. */
  async around<T>(fn: () => Promise<T>): Promise<T> {
    this.inFlight++;
    this.touch();
    try {
      return await fn();
    } finally {
      this.inFlight--;
      this.touch();
    }
  }

  start(): void {
    this.arm();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.fired = true;
  }

  private arm(): void {
    if (this.idleMs === 0 || this.fired) return;
    clearTimeout(this.timer);
    const wait = Math.max(0, this.last + this.idleMs - Date.now());
    this.timer = setTimeout(() => this.check(), wait);
  }

  private check(): void {
    if (this.fired) return;
    if (this.inFlight > 0 || this.busy()) {
      // Work that is not a request (a QubesDB call waiting, a firewall pass) holds the agent up.
      this.timer = setTimeout(() => this.check(), Math.min(1000, this.idleMs));
      return;
    }
    const left = this.last + this.idleMs - Date.now();
    if (left > 0) {
      this.timer = setTimeout(() => this.check(), left);
      return;
    }
    this.fired = true;
    this.onIdle();
  }
}
