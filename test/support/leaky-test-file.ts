/**
 * A test file that leaks on purpose (run only by test/unit/leak-watchdog.test.ts
 * in a child test run): LEAK=socket leaves a connected TCP client and its
 * server open, LEAK=timer an interval, LEAK=none closes everything.
 */
import { once } from "node:events";
import { createServer, connect } from "node:net";
import { it } from "node:test";

const leak = process.env.LEAK ?? "none";

it("closes what it opens", async () => {
  const server = createServer((s) => s.end());
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  server.close();
  await once(server, "close");
});

it("leaves a resource open on purpose", async () => {
  if (leak === "socket") {
    const server = createServer(() => undefined);
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as { port: number };
    const socket = connect(port, "127.0.0.1");
    await once(socket, "connect");
  } else if (leak === "timer") {
    setInterval(function pollsForever() {
      return undefined;
    }, 60_000);
  }
});
