import { Kafka, logLevel, type KafkaConfig } from "kafkajs";
import { closableSocketFactory } from "../../common/kafka-sockets.js";

/** A kafkajs client for a test, and a close that leaves none of its connections behind. */
export interface TestKafka {
  readonly kafka: Kafka;
  /**
   * Ends every connection the client still has and refuses new ones. Call it
   * after disconnecting the client's consumers, producers and admins.
   */
  closeSockets(this: void): void;
}

/** A kafkajs client whose sockets the test owns (see closableSocketFactory). */
export function testKafka(brokers: string, clientId: string, config: Partial<KafkaConfig> = {}): TestKafka {
  const { socketFactory, closeSockets } = closableSocketFactory();
  const kafka = new Kafka({ clientId, brokers: brokers.split(","), logLevel: logLevel.NOTHING, ...config, socketFactory });
  return { kafka, closeSockets };
}
