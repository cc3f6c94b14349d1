// The Node reference server (socket.io 4.8.x from npm) as a benchmark peer, with the
// behaviour every benchmark server shares (bench/servers/README.md).
//   node server.js --port 3002
const http = require("node:http");
const { Server } = require("socket.io");

const ROOM = "bench";
const at = process.argv.indexOf("--port");
const port = at >= 0 ? Number(process.argv[at + 1]) : 3002;

const server = http.createServer();
const io = new Server(server, { serveClient: false });
io.on("connection", (socket) => {
  if (!socket.handshake.auth || !socket.handshake.auth.emitter) socket.join(ROOM);
  socket.on("echo", (...args) => {
    const ack = args.pop();
    if (typeof ack === "function") ack(...args);
  });
  socket.on("fanout", (...args) => io.to(ROOM).emit("tick", ...args));
});
server.on("connection", (tcp) => tcp.setNoDelay(true));
// The same backlog as Tally's listener.
server.listen(port, "127.0.0.1", 1024, () => console.log(`listening on 127.0.0.1:${port}`));
