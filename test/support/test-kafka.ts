import { connect, type Socket } from "node:net";
import { Kafka, logLevel, type ISocketFactory, type KafkaConfig } from "kafkajs";

/** A kafkajs client for a test, and a close that leaves none of its connections behind. */
export interface TestKafka {
  readonly kafka: Kafka;
  /**
   * Ends every connection the client still has and refuses new ones. Call it
   * after disconnecting the client's consumers, producers and admins.
   */
  closeSockets(this: void): void;
}

/**
 * A kafkajs client whose sockets the test owns. kafkajs 2.2.4 can open a
 * connection after consumer.disconnect() resolved: a consumer that crashed
 * during a broker restart still sends the heartbeat of the batch it was
 * processing, through a connection pool the disconnect had already emptied.
 * Nothing closes that connection again, and its request queue's timers keep
 * the test file's process alive for minutes. The socket factory here records
 * every socket; closeSockets() fails them (kafkajs then tears the connection
 * down, timers included) and fails any opened afterwards.
 */
export function testKafka(brokers: string, clientId: string, config: Partial<KafkaConfig> = {}): TestKafka {
  const sockets = new Set<Socket>();
  let closed = false;
  const refuse = (socket: Socket) => socket.destroy(new Error(`the test's Kafka client ${clientId} is closed`));
  const socketFactory: ISocketFactory = ({ host, port, onConnect }) => {
    const socket = connect({ host, port }, onConnect);
    if (closed) {
      // Failed on the next tick, once kafkajs listens for the error.
      refuse(socket);
      return socket;
    }
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    return socket;
  };
  const kafka = new Kafka({ clientId, brokers: brokers.split(","), logLevel: logLevel.NOTHING, ...config, socketFactory });
  return {
    kafka,
    closeSockets() {
      closed = true;
      for (const socket of sockets) refuse(socket);
    },
  };
}
