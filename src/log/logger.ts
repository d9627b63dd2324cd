import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

/**
 * Structured JSON logs. Redaction paths are a backstop: code must log fingerprints, never
 * secrets, in the first place (see core/secret.ts).
 */
export function createLogger(opts: { level?: string; destination?: DestinationStream } = {}): Logger {
  return pino(
    {
      level: opts.level ?? 'info',
      base: { service: 'agent-sts' },
      redact: {
        paths: [
          'req.headers.authorization',
          'headers.authorization',
          '*.password',
          '*.token',
          '*.subject_token',
          '*.actor_token',
          '*.access_token',
          '*.client_secret',
          '*.privateKey',
        ],
        censor: '[redacted]',
      },
    },
    opts.destination,
  );
}
