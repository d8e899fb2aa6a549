// A tiny web app on Node's standard library: answers every GET with a greeting.
const http = require("http");
const port = process.env.PORT || 8080;
http
  .createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8" });
    res.end(`Hello from node ${process.version} on paas\n`);
  })
  .listen(port, () => console.log(`node-app listening on port ${port}`));
