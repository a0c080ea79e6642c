// The tests of `pipeline.test.js` without TextEncoder/TextDecoder, as under
// QuickJS (the engine the build uses). node runs each test file in a
// process of its own, so the modules load here without them.

delete globalThis.TextEncoder;
delete globalThis.TextDecoder;
await import("./pipeline.test.js");
