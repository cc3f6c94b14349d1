// Drives the stock socket.io-client for the Rust integration tests (tests/common/node.rs).
// Commands arrive as JSON lines on stdin; everything the clients see is reported as JSON lines
// on stdout. Binary values travel as {"$binary": "<base64>"} in both directions.
import { io } from "socket.io-client";
import readline from "node:readline";

const sockets = new Map();
const report = (message) => process.stdout.write(JSON.stringify(message) + "\n");

const encode = (value) => {
  if (value instanceof ArrayBuffer) return { $binary: Buffer.from(value).toString("base64") };
  if (ArrayBuffer.isView(value)) return { $binary: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64") };
  if (Array.isArray(value)) return value.map(encode);
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, encode(v)]));
  return value;
};
const decode = (value) => {
  if (Array.isArray(value)) return value.map(decode);
  if (value && typeof value === "object") {
    if (typeof value.$binary === "string") return Buffer.from(value.$binary, "base64");
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, decode(v)]));
  }
  return value;
};

function connect({ id, url, token, opts = {} }) {
  const options = { reconnectionDelay: 100, reconnectionDelayMax: 300, ...opts };
  if (token !== undefined) options.auth = { token };
  const socket = io(url, options);
  sockets.set(id, socket);
  socket.io.on("open", () => {
    socket.io.engine.on("upgrade", (transport) => report({ id, ev: "upgrade", transport: transport.name }));
  });
  socket.on("connect", () =>
    report({ id, ev: "connect", sid: socket.id, recovered: socket.recovered, transport: socket.io.engine.transport.name }),
  );
  socket.on("connect_error", (err) => report({ id, ev: "connect_error", message: err.message, data: err.data ?? null }));
  socket.on("disconnect", (reason) => report({ id, ev: "disconnect", reason }));
  socket.onAny((event, ...args) => {
    // An event sent with an ack is answered with its own arguments.
    const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
    // With connection state recovery the server appends the event's offset (a string): the
    // client records it (socket._lastOffset) and leaves it in the arguments; report it apart.
    const offset = !ack && socket._pid && typeof args[args.length - 1] === "string" ? args.pop() : undefined;
    report({ id, ev: "event", event, args: encode(args), offset });
    if (ack) ack(...args);
  });
}

async function run(command) {
  const { op, id, ref } = command;
  const socket = sockets.get(id);
  switch (op) {
    case "connect":
      return connect(command);
    case "emit":
      if (command.ack) {
        const answer = await socket.timeout(command.timeout ?? 5000).emitWithAck(command.event, ...decode(command.args));
        return report({ id, ev: "ack", ref, args: encode([answer]) });
      }
      socket.emit(command.event, ...decode(command.args));
      return report({ id, ev: "emitted", ref });
    case "burst": {
      // `count` acknowledged emits at once; each result is the ack's answer or the error (a
      // timeout), in the order they were sent, with how long each took.
      const started = performance.now();
      const results = await Promise.all(
        Array.from({ length: command.count }, async (_, n) => {
          // "{n}" anywhere in the arguments becomes the emit's number.
          const args = decode(JSON.parse(JSON.stringify(command.args).replaceAll("{n}", String(n))));
          const sent = performance.now();
          try {
            const answer = await socket.timeout(command.timeout ?? 5000).emitWithAck(command.event, ...args);
            return { answer: encode(answer), ms: performance.now() - sent };
          } catch (error) {
            return { error: String(error?.message ?? error), ms: performance.now() - sent };
          }
        }),
      );
      return report({ id, ev: "burst", ref, results, ms: performance.now() - started });
    }
    case "transport":
      return report({ id, ev: "transport", ref, transport: socket.io.engine?.transport?.name ?? null, connected: socket.connected });
    case "disconnect":
      socket.disconnect();
      return report({ id, ev: "disconnected", ref });
    case "exit":
      for (const s of sockets.values()) s.disconnect();
      process.exit(0);
  }
  throw new Error(`unknown op ${op}`);
}

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  let command;
  try {
    command = JSON.parse(line);
  } catch (error) {
    return report({ ev: "error", message: `bad command: ${error.message}` });
  }
  run(command).catch((error) => report({ id: command.id, ev: "error", ref: command.ref, message: String(error?.message ?? error) }));
});
process.stdin.on("end", () => process.exit(0));
report({ ev: "ready" });
