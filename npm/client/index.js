// @switchyard/client: loads the WebAssembly module once, then exports its classes. Works
// from a plain <script type="module"> and through bundlers that handle top-level await
// and `new URL(..., import.meta.url)` (Vite, webpack 5, Rollup, esbuild).
import init, { RelayClient, FocusDeclarationProtocol } from './switchyard_client.js';

await init();

export { RelayClient, FocusDeclarationProtocol };
