/**
 * Node-RED settings of the `npm start` demo (this folder is its user
 * directory). FusedRT's nodes are loaded from this checkout (nodesDir), so
 * the demo runs the code in dist/ without installing the package.
 */
const path = require('path');

module.exports = {
    flowFile: 'flows.json',
    flowFilePretty: true,
    // The demo flows hold no credentials; no key means no startup warning.
    credentialSecret: false,
    uiPort: Number(process.env.PORT) || 1880,
    // The editor has no login: listen on this machine only unless HOST says otherwise.
    uiHost: process.env.HOST || '127.0.0.1',
    nodesDir: [path.resolve(__dirname, '..')],
    logging: { console: { level: 'info', metrics: false, audit: false } },
    editorTheme: { projects: { enabled: false }, tours: false },
    externalModules: { palette: { allowInstall: false } },
};
