// __test__/jwt.js: signs JSON Web Tokens for the tests with Node's own crypto, so the
// relay's verifier (the Rust jsonwebtoken crate) is checked against an independent signer.
const crypto = require('node:crypto');

const base64url = (data) => Buffer.from(data).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

/** Signs `claims` with `alg` (HS256, RS256, ES256 or EdDSA) and `key` (a secret or a private KeyObject). */
function sign(claims, { alg = 'HS256', key, kid } = {}) {
  const header = { alg, typ: 'JWT', ...(kid ? { kid } : {}) };
  const input = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
  let signature;
  if (alg === 'HS256') signature = crypto.createHmac('sha256', key).update(input).digest();
  else if (alg === 'RS256') signature = crypto.sign('sha256', Buffer.from(input), key);
  else if (alg === 'ES256') signature = crypto.sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  else if (alg === 'EdDSA') signature = crypto.sign(null, Buffer.from(input), key);
  else throw new Error(`no signer for ${alg}`);
  return `${input}.${base64url(signature)}`;
}

/** A key pair of the kind `alg` needs, with its public half as PEM and as a JWK. */
function keyPair(alg, kid) {
  const kind = { RS256: ['rsa', { modulusLength: 2048 }], ES256: ['ec', { namedCurve: 'P-256' }], EdDSA: ['ed25519', {}] }[alg];
  const { privateKey, publicKey } = crypto.generateKeyPairSync(...kind);
  return {
    privateKey,
    pem: publicKey.export({ type: 'spki', format: 'pem' }),
    jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' },
  };
}

module.exports = { sign, keyPair, now };
