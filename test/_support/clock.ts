/** A manual clock: tests advance time instead of sleeping. */
export class FakeClock {
  constructor(public now = 1_700_000_000_000) {}
  readonly read = (): number => this.now;
  advance(ms: number): void {
    this.now += ms;
  }
}
