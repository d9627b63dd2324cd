import { pino, type Logger, type DestinationStream } from 'pino';
import { traceLogFields } from '../telemetry/log-fields.js';

export type { Logger };

/**
 * Structured JSON logs. Redaction paths are a backstop: code must log fingerprints, never
 * secrets, in the first place (see core/secret.ts). With traces on, every line written inside a
 * request or span carries `requestId`, `trace_id` and `span_id` (telemetry/log-fields.ts).
 */
export function createLogger(opts: { level?: string; destination?: DestinationStream } = {}): Logger {
  return pino(
    {
      level: opts.level ?? 'info',
      base: { service: 'agent-sts' },
      mixin: traceLogFields,
      redact: {
        paths: [
          'req.headers.authorization',
          'headers.authorization',
          '*.headers.authorization',
          'authorization',
          'password',
          'token',
          'access_token',
          '*.authorization',
          '*.refresh_token',
          '*.client_assertion',
          '*.secretAccessKey',
          '*.sessionToken',
          '*.adminUrl',
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
