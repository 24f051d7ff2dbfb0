// A real OpenID provider for the tests (the npm registry's certified oidc-provider), on an
// ephemeral loopback port. Usage: node provider.mjs CONFIG.json
//
// CONFIG: {"jwks": {"keys": [private JWKs]}, "accounts": {"NAME": {"password": "...",
//          "groups": [...]}}, "resources": {"urn:...": seconds_ttl}, "cookie_key": "...",
//          "port": 0 (or a given one: a restart with new keys at the same issuer)}
// Prints one JSON line {"issuer": "http://127.0.0.1:PORT"} once it listens.
//
// Clients register themselves (RFC 7591, open registration), so each test server can name its
// own redirect URI. Login is a plain HTML form at /interaction/UID (username, password);
// consent is granted at once (a first-party client). Access tokens are JWTs (RFC 9068) for the
// resource indicated (RFC 8707), the configured first one by default, carrying `groups`.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = config.accounts;
const resources = config.resources;
const defaultResource = Object.keys(resources)[0];

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(uid, error) {
  return `<!doctype html><html><head><title>Sign in</title></head><body>
<h1>Sign in to the test provider</h1>${error ? `<p class="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label>Username <input name="username" autofocus></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Sign in</button></form></body></html>`;
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => resolve(Object.fromEntries(new URLSearchParams(body))));
    req.on('error', reject);
  });
}

function page(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

async function interaction(provider, req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params, session } = details;
  if (req.method === 'POST' && req.url.endsWith('/login')) {
    const form = await readForm(req);
    const account = accounts[form.username];
    if (!account || account.password !== form.password) {
      return page(res, 401, loginPage(uid, 'Wrong username or password.'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: form.username } },
      { mergeWithLastSubmission: false });
  }
  if (prompt.name === 'login') return page(res, 200, loginPage(uid, ''));
  // consent: a first-party client gets what it asked for
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { consent: { grantId } },
    { mergeWithLastSubmission: true });
}

const server = http.createServer();
server.listen(config.port || 0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    jwks: config.jwks,
    cookies: { keys: [config.cookie_key] },
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    conformIdTokenClaims: false, // the ID token carries the scopes' claims (groups)
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => defaultResource,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, indicator) => {
          if (!(indicator in resources)) throw new errors.InvalidTarget();
          return {
            scope: 'api',
            audience: indicator,
            accessTokenTTL: resources[indicator],
            accessTokenFormat: 'jwt',
          };
        },
      },
    },
    extraTokenClaims: async (ctx, token) => {
      const account = token.accountId && accounts[token.accountId];
      return account ? { groups: account.groups, preferred_username: token.accountId } : {};
    },
    findAccount: (ctx, id) => (accounts[id] ? {
      accountId: id,
      claims: () => ({ sub: id, name: id, preferred_username: id, groups: accounts[id].groups }),
    } : undefined),
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  });
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (req.url.startsWith('/interaction/')) {
      interaction(provider, req, res).catch((err) => {
        if (!res.headersSent) page(res, err.statusCode || 500, escape(err.message));
      });
      return;
    }
    callback(req, res);
  });
  process.stdout.write(JSON.stringify({ issuer }) + '\n');
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
