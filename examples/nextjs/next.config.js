// examples/nextjs/next.config.js
module.exports = {
  // The native addon is loaded by Node, not bundled.
  serverExternalPackages: ['switchyard'],
};
