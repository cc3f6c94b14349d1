// Opens N websocket connections with the stock socket.io-client, reports when all are
// connected, holds them for a few seconds, then disconnects. Used by bench/connections.sh.
import { io } from "../tests/js/node_modules/socket.io-client/build/esm-debug/index.js";

const [url, token, count] = [process.argv[2], process.argv[3], Number(process.argv[4])];
const started = Date.now();
let connected = 0;
const sockets = [];
await new Promise((resolve) => {
  for (let i = 0; i < count; i++) {
    const socket = io(url, { forceNew: true, transports: ["websocket"], auth: { token } });
    socket.on("connect", () => ++connected === count && resolve());
    sockets.push(socket);
  }
});
console.log(`connected ${count} in ${Date.now() - started} ms`);
console.log("READY");
await new Promise((resolve) => setTimeout(resolve, 4000));
sockets.forEach((socket) => socket.disconnect());
setTimeout(() => process.exit(0), 500);
