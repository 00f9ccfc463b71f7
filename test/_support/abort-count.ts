/** Counts AbortControllers made from now on, by putting a counting subclass in the global's place until `restore()`. */
export function countAbortControllers(): { readonly made: number; restore(): void } {
  const original = globalThis.AbortController;
  const counter = { made: 0, restore: () => void (globalThis.AbortController = original) };
  globalThis.AbortController = class extends original {
    constructor() {
      super();
      counter.made++;
    }
  };
  return counter;
}
