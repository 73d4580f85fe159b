import net from "node:net";
import tls from "node:tls";
import type { ISocketFactory } from "kafkajs";

/** A kafkajs socket factory that records its sockets, and the call that ends them. */
export interface ClosableSockets {
  readonly socketFactory: ISocketFactory;
  /**
   * Fails every socket still open and every one opened afterwards. Call it
   * after disconnecting the client's producers, consumers and admins.
   */
  closeSockets(this: void): void;
}

/**
 * kafkajs 2.2.4 can open a connection after its client disconnected: a connect
 * in flight (a heartbeat or a metadata request during a broker restart) is
 * completed afterwards, through a pool the disconnect had already emptied.
 * Nothing closes that connection again, and it keeps the process alive. The
 * sockets are made as kafkajs's default factory makes them (TLS with the
 * server name unless the host is an IP, keep-alive at 60 s). They are ended
 * with an error, not a plain destroy: kafkajs tears a connection down, its
 * request queue's timers included, only on the socket's 'error' or 'end'.
 */
export function closableSocketFactory(): ClosableSockets {
  const sockets = new Set<net.Socket>();
  let closed = false;
  // destroy(err) emits the error on a later tick, once kafkajs listens for it.
  const fail = (socket: net.Socket) => socket.destroy(new Error("the kafka client is closed"));
  const socketFactory: ISocketFactory = ({ host, port, ssl, onConnect }) => {
    const socket = ssl ? tls.connect({ host, port, ...(net.isIP(host) ? {} : { servername: host }), ...ssl }, onConnect) : net.connect({ host, port }, onConnect);
    socket.setKeepAlive(true, 60_000);
    if (closed) fail(socket);
    else {
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
    }
    return socket;
  };
  return {
    socketFactory,
    closeSockets() {
      closed = true;
      for (const socket of sockets) fail(socket);
    },
  };
}
