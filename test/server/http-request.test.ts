/**
 * The request head reader on its own: a head that arrives in pieces is found
 * whichever byte it was cut at, though each call searches only the new bytes.
 */
import { expect, test } from "bun:test";
import { _HttpError, _readHead } from "../../src/server/http-request.ts";

const LIMITS = { maxHeadBytes: 16 * 1024, maxHeaders: 100, maxBodyBytes: 1024 };

test("a head cut at any byte is read once the rest arrives, and only then", () => {
  const head = "\r\nPUT /k?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n";
  const whole = Buffer.from(`${head}abc`, "latin1");
  const outcomes: string[] = [];
  for (let cut = 1; cut < head.length; cut++) {
    const first = _readHead(whole.subarray(0, cut), 0, LIMITS);
    const second = _readHead(whole, cut, LIMITS);
    outcomes.push(`${first === null} ${second?.method} ${second?.path} ${second?.query} ${second?.bodyLength} ${second?.headLength}`);
  }
  expect(new Set(outcomes)).toEqual(new Set([`true PUT /k q=1 3 ${head.length}`]));
});

test("a bare LF is refused in whichever piece it arrives", () => {
  const request = Buffer.from("GET /k HTTP/1.1\r\nHost: x\nX-A: b\r\n", "latin1");
  const lf = request.indexOf("x\n") + 1;
  const outcomes: string[] = [];
  for (let cut = 1; cut < request.length; cut++) {
    try {
      const first = _readHead(request.subarray(0, cut), 0, LIMITS);
      _readHead(request, first === null ? cut : 0, LIMITS);
      outcomes.push("read");
    } catch (error) {
      outcomes.push(error instanceof _HttpError ? `${error.status} at ${cut > lf ? "first" : "second"} call` : String(error));
    }
  }
  expect(new Set(outcomes)).toEqual(new Set(["400 at first call", "400 at second call"]));
});
