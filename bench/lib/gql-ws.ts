// A minimal graphql-transport-ws client (the protocol graphql-ws 6 speaks), on `ws`. Cheaper
// than graphql-ws's own client, so that 1,000 subscribers cost the load generator little, and
// it stamps every message with its arrival time before parsing it.
import WebSocket from 'ws';

export interface NextHandler {
  /** `at`: performance.now() when the message arrived. */
  next(payload: { data?: unknown; errors?: unknown[] }, at: number): void;
  error(error: Error): void;
  complete(): void;
}

export class GqlWsConnection {
  private readonly handlers = new Map<string, NextHandler>();
  private nextId = 1;
  private closed = false;

  private constructor(private readonly socket: WebSocket) {
    socket.on('message', (data: Buffer) => {
      const at = performance.now();
      let message: { id?: string; type?: string; payload?: unknown };
      try {
        message = JSON.parse(data.toString('utf8')) as typeof message;
      } catch {
        return;
      }
      if (message.type === 'ping') {
        socket.send('{"type":"pong"}');
        return;
      }
      const handler = message.id === undefined ? undefined : this.handlers.get(message.id);
      if (handler === undefined || message.id === undefined) return;
      if (message.type === 'next') handler.next(message.payload as { data?: unknown; errors?: unknown[] }, at);
      else if (message.type === 'error') {
        this.handlers.delete(message.id);
        handler.error(new Error(`subscription error: ${JSON.stringify(message.payload)}`));
      } else if (message.type === 'complete') {
        this.handlers.delete(message.id);
        handler.complete();
      }
    });
    socket.on('close', (code, reason) => {
      this.closed = true;
      const error = new Error(`socket closed (${code} ${reason.toString()})`);
      for (const handler of this.handlers.values()) handler.error(error);
      this.handlers.clear();
    });
    socket.on('error', () => undefined);
  }

  static open(url: string, token: string, timeoutMs = 10_000): Promise<GqlWsConnection> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url, 'graphql-transport-ws', { perMessageDeflate: false });
      const timer = setTimeout(() => {
        socket.terminate();
        reject(new Error('no connection_ack in time'));
      }, timeoutMs);
      const fail = (error: Error): void => {
        clearTimeout(timer);
        reject(error);
      };
      socket.once('error', fail);
      socket.once('close', (code, reason) => fail(new Error(`socket closed before ack (${code} ${reason.toString()})`)));
      socket.once('open', () => {
        socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } }));
      });
      const onAck = (data: Buffer): void => {
        const message = JSON.parse(data.toString('utf8')) as { type?: string };
        if (message.type !== 'connection_ack') return;
        clearTimeout(timer);
        socket.off('message', onAck);
        socket.removeAllListeners('error');
        socket.removeAllListeners('close');
        resolve(new GqlWsConnection(socket));
      };
      socket.on('message', onAck);
    });
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  subscribe(query: string, variables: Record<string, unknown>, handler: NextHandler): string {
    const id = String(this.nextId++);
    this.handlers.set(id, handler);
    this.socket.send(JSON.stringify({ id, type: 'subscribe', payload: { query, variables } }));
    return id;
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.socket.terminate();
        resolve();
      }, 2000);
      this.socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.socket.close(1000, 'bench done');
    });
  }
}
