import type { z } from 'zod';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { problem } from './http-errors.js';

/** The media type of a request, lower-cased, without parameters. */
export const mediaType = (req: FastifyRequest) => (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();

/**
 * Reads a JSON request body (the app reads every body as text) and validates it; a refusal says
 * why in problem+json terms: 415 for another media type, 400 for bad JSON or a schema problem
 * (with the path of each).
 */
export function readJsonBody<T>(req: FastifyRequest, schema: z.ZodType<T>): { ok: true; value: T } | { ok: false; status: 400 | 415; detail: string } {
  if (mediaType(req) !== 'application/json') return { ok: false, status: 415, detail: 'content type must be application/json' };
  let raw: unknown;
  try {
    raw = JSON.parse(typeof req.body === 'string' ? req.body : '');
  } catch {
    return { ok: false, status: 400, detail: 'request body is not valid JSON' };
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) return { ok: false, status: 400, detail: parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ') };
  return { ok: true, value: parsed.data };
}

/** Sends the problem+json answer of a refused body. */
export const refuseBody = (reply: FastifyReply, r: { status: 400 | 415; detail: string }) =>
  reply.code(r.status).type('application/problem+json').send(problem(r.status, r.status === 415 ? 'unsupported media type' : 'invalid request', r.detail));
