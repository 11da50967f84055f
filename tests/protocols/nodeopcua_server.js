// A node-opcua server (a third-party encoder) for tests/protocols/test_opcua_notifications.py: scalar
// variables of several types, changing every 100 ms. Run: NODE_RED_HOME=<Node-RED install> node nodeopcua_server.js PORT
const path = require("path");
const { OPCUAServer, Variant, DataType, StatusCodes } = require(path.join(process.env.NODE_RED_HOME, "node_modules", "node-opcua"));
(async () => {
  const port = parseInt(process.argv[2]);
  const server = new OPCUAServer({ port, resourcePath: "/UA/peer" });
  await server.initialize();
  const space = server.engine.addressSpace;
  const ns = space.getOwnNamespace();
  const dev = ns.addObject({ organizedBy: space.rootFolder.objects, browseName: "Peer" });
  const kinds = {
    Double: [DataType.Double, (n) => n * 1.5],
    Float: [DataType.Float, (n) => n * 0.25],
    Int32: [DataType.Int32, (n) => -n],
    UInt16: [DataType.UInt16, (n) => n % 65536],
    UInt32: [DataType.UInt32, (n) => 4000000000 + n],
    Boolean: [DataType.Boolean, (n) => n % 2 === 0],
    String: [DataType.String, (n) => `text ${n} ✓`],
    ByteString: [DataType.ByteString, (n) => Buffer.from([n % 256, 0, 255])],
    DateTime: [DataType.DateTime, (n) => new Date(Date.UTC(2024, 0, 1) + n * 1000)],
    Bad: [DataType.Double, (n) => n],
  };
  const vars = {};
  for (const [name, [dt]] of Object.entries(kinds)) {
    vars[name] = ns.addVariable({ componentOf: dev, browseName: name, nodeId: `s=Peer.${name}`, dataType: dt });
  }
  let n = 0;
  setInterval(() => {
    n += 1;
    for (const [name, [dt, f]] of Object.entries(kinds)) {
      const status = name === "Bad" ? StatusCodes.BadSensorFailure : StatusCodes.Good;
      vars[name].setValueFromSource(new Variant({ dataType: dt, value: f(n) }), status, new Date());
    }
  }, 100);
  await server.start();
  console.log("READY " + server.getEndpointUrl());
})().catch((e) => { console.error(e); process.exit(1); });
