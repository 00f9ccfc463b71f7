/**
 * Runs a task once at the end of the event loop's current turn, however
 * often it is asked for during the turn. The batchers send this way: the
 * requests of one turn (an HTTP server's reads from one poll) leave
 * together instead of the first alone and the rest a round trip behind it.
 */
export class _EndOfTurn {
  private scheduled = false;
  private readonly fire = (): void => {
    this.scheduled = false;
    this.task();
  };

  constructor(private readonly task: () => void) {}

  request(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.fire);
  }
}
