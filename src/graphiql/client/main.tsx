import { createGraphiQLFetcher, type Fetcher, type FetcherOpts } from '@graphiql/toolkit';
import { GraphiQL } from 'graphiql';
import { createClient } from 'graphql-ws';
import type { Environment } from 'monaco-editor';
import { createRoot } from 'react-dom/client';
import 'graphiql/style.css';
import './page.css';

// The workers are separate bundles next to this one (see scripts/build-graphiql.mjs); resolving
// them against this module's own URL keeps them same-origin and independent of where the assets
// are mounted. The labels are the ones graphiql's own setup-workers modules switch on.
const monacoEnvironment: Environment = {
  getWorker(_workerId, label) {
    const file = label === 'json' ? 'json.worker.js' : label === 'graphql' ? 'graphql.worker.js' : 'editor.worker.js';
    return new Worker(new URL(`./${file}`, import.meta.url), { name: label });
  },
};
window.MonacoEnvironment = monacoEnvironment;

const DEFAULT_QUERY = `# Put your token in the Headers tab below:
#   { "Authorization": "Bearer <token>" }
# Queries send it as a header, subscriptions
# when their WebSocket connects.

{
  serverInfo {
    version
    upstreamBaseUrl
    simulator
  }
}
`;

const mountPoint = document.getElementById('graphiql');
if (!mountPoint) {
  throw new Error('GraphiQL: the page has no #graphiql element to render into');
}
const endpoint = mountPoint.dataset.endpoint ?? '/graphql';
const subscriptionUrl = new URL(endpoint, location.href);
subscriptionUrl.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';

function authorizationOf(headers: FetcherOpts['headers']): string {
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (name.toLowerCase() === 'authorization' && typeof value === 'string') {
      return value;
    }
  }
  return '';
}

// The gateway authenticates a socket once, from connectionParams, so every distinct Authorization
// value needs a socket of its own. Clients are kept rather than replaced so that a subscription
// still running under an earlier token is not cut off; `lazy` means an idle client holds no socket.
const fetchersByAuthorization = new Map<string, Fetcher>();

function fetcherFor(authorization: string): Fetcher {
  let fetcher = fetchersByAuthorization.get(authorization);
  if (!fetcher) {
    fetcher = createGraphiQLFetcher({
      url: endpoint,
      wsClient: createClient({
        url: subscriptionUrl.href,
        lazy: true,
        connectionParams: authorization ? { authorization } : {},
      }),
    });
    fetchersByAuthorization.set(authorization, fetcher);
  }
  return fetcher;
}

// GraphiQL passes the headers editor's current contents with each operation, so the choice of
// client is made per call rather than once at start-up.
const fetcher: Fetcher = (params, opts) => fetcherFor(authorizationOf(opts?.headers))(params, opts);

createRoot(mountPoint).render(
  <GraphiQL fetcher={fetcher} defaultQuery={DEFAULT_QUERY} defaultEditorToolsVisibility="headers" />,
);
