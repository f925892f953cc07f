/**
 * The secured listeners `startKafka({ security })` adds beside PLAINTEXT (which stays for
 * inter-broker traffic and the tests' admin work):
 *
 *   SASL_SSL  TLS (server certificate only) + SASL SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN
 *   SSL       TLS with a required client certificate signed by the test CA (mTLS)
 *
 * SCRAM credentials are written into the metadata log at format time
 * (`StorageTool format --add-scram`, KIP-900, Kafka ≥ 3.5); PLAIN users live in the
 * listener's JAAS line. No authorizer: any authenticated client may do anything.
 */
import type { TestCerts } from './tls.js';

export interface KafkaSecurityOptions {
  readonly certs: TestCerts;
  /** Users for every SASL mechanism (SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN). */
  readonly users: readonly { readonly name: string; readonly password: string }[];
}

export interface SecuredListeners {
  /** "127.0.0.1:port" of the SASL_SSL listener. */
  readonly saslSsl: string[];
  /** "127.0.0.1:port" of the SSL listener (client certificate required). */
  readonly ssl: string[];
}

export interface SecurityConfig {
  readonly listeners: string[];
  readonly protocolMap: string[];
  readonly properties: Record<string, string>;
  readonly formatArgs: string[];
  readonly addresses: SecuredListeners;
}

const safe = /^[A-Za-z0-9_.-]+$/;

/** server.properties lines and StorageTool arguments for the two secured listeners on `saslPort` and `sslPort`. */
export function securityConfig(security: KafkaSecurityOptions, saslPort: number, sslPort: number): SecurityConfig {
  // The names and passwords go into a JAAS line and a StorageTool argument unquoted: keep them plain.
  for (const u of security.users) if (!safe.test(u.name) || !safe.test(u.password)) throw new Error(`kafka test user "${u.name}": use [A-Za-z0-9_.-] only in names and passwords`);
  const { certs } = security;
  const plainUsers = security.users.map((u) => `user_${u.name}="${u.password}"`).join(' ');
  const properties: Record<string, string> = {
    'ssl.keystore.type': 'PKCS12',
    'ssl.keystore.location': certs.serverKeystore,
    'ssl.keystore.password': certs.storePassword,
    'ssl.key.password': certs.storePassword,
    'ssl.truststore.type': 'PKCS12',
    'ssl.truststore.location': certs.truststore,
    'ssl.truststore.password': certs.storePassword,
    'listener.name.ssl.ssl.client.auth': 'required',
    'sasl.enabled.mechanisms': 'SCRAM-SHA-256,SCRAM-SHA-512,PLAIN',
    'listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config': 'org.apache.kafka.common.security.scram.ScramLoginModule required;',
    'listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config': 'org.apache.kafka.common.security.scram.ScramLoginModule required;',
    'listener.name.sasl_ssl.plain.sasl.jaas.config': `org.apache.kafka.common.security.plain.PlainLoginModule required ${plainUsers};`,
  };
  const formatArgs = security.users.flatMap((u) => ['SCRAM-SHA-256', 'SCRAM-SHA-512'].flatMap((m) => ['--add-scram', `${m}=[name=${u.name},password=${u.password}]`]));
  return {
    listeners: [`SASL_SSL://127.0.0.1:${saslPort}`, `SSL://127.0.0.1:${sslPort}`],
    protocolMap: ['SASL_SSL:SASL_SSL', 'SSL:SSL'],
    properties,
    formatArgs,
    addresses: { saslSsl: [`127.0.0.1:${saslPort}`], ssl: [`127.0.0.1:${sslPort}`] },
  };
}
