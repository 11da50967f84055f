// Node-RED settings for tests/benchmarks/bench_peers.py (the `nodered` leg): headless, local only.
// The editor and admin API are off (httpAdminRoot: false); the one HTTP endpoint is the flow's own
// GET /count on 127.0.0.1, which the benchmark reads at the start and end of its window.
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: parseInt(process.env.NODE_RED_BENCH_PORT || "1880", 10),
    httpAdminRoot: false,
    httpNodeRoot: "/",
    flowFilePretty: false,
    credentialSecret: false,
    logging: { console: { level: "warn", metrics: false, audit: false } },
    contextStorage: { default: { module: "memory" } },
    telemetry: { enabled: false },
    diagnostics: { enabled: false },
    runtimeState: { enabled: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false }, modules: { allowInstall: false } },
    functionExternalModules: false,
};
