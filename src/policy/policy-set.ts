import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { compilePolicySet, policySourcesOf, type AppConfig } from '../config/load-config.js';
import { ConfigError } from '../errors/sts-errors.js';
import type { Clock } from '../lib/clock.js';
import { sha256Hex } from '../lib/crypto.js';
import type { Logger } from '../log/logger.js';
import { parsePolicyFile, policyFilesIn, type LoadedDocument } from './policy-document.js';
import { createEngineFromModel, type PolicyEngine } from './policy-engine.js';
import { asLoaded } from './policy-model.js';

/**
 * The live policy set: config-file policy (v1 rules, inline `policy.documents`), every policy file
 * of `policy.dir` and every document uploaded through the admin API (the PolicyDocument table),
 * compiled together with the same checks as at start-up. Every replica polls the directory (by
 * content hash) and the table (count + latest update) and swaps in the new engine when either
 * changed; a set that does not compile is logged with file, line and reason, kept as `lastError`,
 * and the previous engine stays in force. Requests read the engine in force with one property read.
 */

/** A row of the PolicyDocument table (`content` is the YAML as uploaded). */
export interface PolicyDocumentRow {
  name: string;
  content: string;
  sha256: string;
  updatedAt: Date;
  updatedBy: string;
}

/** The part of the Prisma delegate the set and its admin use. */
export interface PolicyDocumentTable {
  aggregate(args: { _count: { _all: true }; _max: { updatedAt: true } }): Promise<{ _count: { _all: number }; _max: { updatedAt: Date | null } }>;
  findMany(args: { orderBy: { name: 'asc' } }): Promise<PolicyDocumentRow[]>;
  upsert(args: { where: { name: string }; create: Omit<PolicyDocumentRow, 'updatedAt'>; update: Omit<PolicyDocumentRow, 'name' | 'updatedAt'> }): Promise<unknown>;
  delete(args: { where: { name: string } }): Promise<unknown>;
}

export interface PolicyDocumentInfo {
  name: string;
  kind: 'Policy' | 'PolicyCeiling';
  /** `config`: inline in the config file; `file`: in policy.dir; `api`: uploaded through the admin API. */
  source: 'config' | 'file' | 'api';
  /** The file it was read from (policy.dir). */
  file?: string;
  /** SHA-256 of the file or uploaded content (inline documents: of their JSON). */
  sha256: string;
  updatedAt?: Date;
  updatedBy?: string;
}

export interface PolicyReloadError {
  at: Date;
  problems: string[];
}

interface DirFile {
  file: string;
  text: string;
}

/** The source label of an uploaded document in problems: `api:<name>:<line>: <path>: <reason>`. */
export const apiSource = (name: string) => `api:${name}`;

export function createPolicySet(o: { config: AppConfig; table: PolicyDocumentTable; logger: Logger; clock: Clock }) {
  const sources = policySourcesOf(o.config.policy);
  const inlineDocs = (o.config.policy.documents ?? []).slice(0, sources.inlineCount);
  const inline = asLoaded(inlineDocs);
  if (inline.problems.length) throw new ConfigError(inline.problems);
  const inlineInfo: PolicyDocumentInfo[] = inline.documents.map((d, i) => ({ name: d.doc.metadata.name, kind: d.doc.kind, source: 'config', sha256: sha256Hex(JSON.stringify(inlineDocs[i])) }));

  function readDir(): DirFile[] {
    if (!sources.dir) return [];
    return policyFilesIn(sources.dir).map((file) => ({ file, text: readFileSync(file, 'utf8') }));
  }

  /** Compiles a candidate set; `problems` non-empty means it must not be used. */
  function compile(files: DirFile[], rows: readonly PolicyDocumentRow[]): { engine?: PolicyEngine; documents: PolicyDocumentInfo[]; problems: string[] } {
    const loaded: LoadedDocument[] = [...inline.documents];
    const documents: PolicyDocumentInfo[] = [...inlineInfo];
    const problems: string[] = [];
    const add = (source: 'file' | 'api', label: string, text: string, extra: Partial<PolicyDocumentInfo>) => {
      const r = parsePolicyFile(label, text);
      problems.push(...r.problems);
      loaded.push(...r.documents);
      for (const d of r.documents) documents.push({ name: d.doc.metadata.name, kind: d.doc.kind, source, sha256: sha256Hex(text), ...extra });
    };
    for (const f of files) add('file', f.file, f.text, { file: f.file });
    for (const row of rows) add('api', apiSource(row.name), row.content, { updatedAt: row.updatedAt, updatedBy: row.updatedBy });
    if (problems.length) return { documents, problems };
    const set = compilePolicySet(o.config, loaded);
    if (set.problems.length) return { documents, problems: [...new Set(set.problems)] };
    return { engine: createEngineFromModel(set.model), documents, problems: [] };
  }

  const first = compile(safeReadDir(), []);
  if (!first.engine) throw new ConfigError(first.problems);
  let engine: PolicyEngine = first.engine;
  let documents = first.documents;
  let lastError: PolicyReloadError | undefined;
  let stamp = '';
  let queue: Promise<unknown> = Promise.resolve();

  function safeReadDir(): DirFile[] {
    try {
      return readDir();
    } catch (e) {
      throw new ConfigError([`${sources.dir}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`]);
    }
  }

  async function readAll(): Promise<{ files: DirFile[]; rows: PolicyDocumentRow[]; stamp: string }> {
    const files = safeReadDir();
    const agg = await o.table.aggregate({ _count: { _all: true }, _max: { updatedAt: true } });
    const dirStamp = sha256Hex(files.map((f) => `${basename(f.file)}\u0000${sha256Hex(f.text)}`).join('\n'));
    const next = `${dirStamp}/${agg._count._all}/${agg._max.updatedAt?.toISOString() ?? '-'}`;
    return { files, rows: next === stamp ? [] : await o.table.findMany({ orderBy: { name: 'asc' } }), stamp: next };
  }

  async function doReload(force: boolean): Promise<PolicyReloadResult> {
    let read: Awaited<ReturnType<typeof readAll>>;
    try {
      read = await readAll();
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      lastError = { at: o.clock.now(), problems: e.problems };
      o.logger.error({ problems: e.problems }, 'policy set not reloaded; the previous set stays in force');
      return { changed: false, version: engine.version, problems: e.problems };
    }
    if (!force && read.stamp === stamp) return { changed: false, version: engine.version, problems: [] };
    const rows = read.stamp === stamp ? await o.table.findMany({ orderBy: { name: 'asc' } }) : read.rows;
    stamp = read.stamp;
    const next = compile(read.files, rows);
    if (!next.engine) {
      lastError = { at: o.clock.now(), problems: next.problems };
      o.logger.error({ problems: next.problems }, `policy set rejected: ${next.problems.join('; ')}; the previous set (${engine.version}) stays in force`);
      return { changed: false, version: engine.version, problems: next.problems };
    }
    const changed = next.engine.version !== engine.version;
    if (changed) o.logger.info({ from: engine.version, to: next.engine.version, documents: next.documents.length }, 'policy set reloaded');
    engine = next.engine;
    documents = next.documents;
    lastError = undefined;
    return { changed, version: engine.version, problems: [] };
  }

  return {
    /** Decides with the engine in force (see PolicyEngine.evaluate). */
    evaluate: (...a: Parameters<PolicyEngine['evaluate']>) => engine.evaluate(...a),
    /** Content hash of the set in force. */
    get version(): string {
      return engine.version;
    },
    engine: (): PolicyEngine => engine,
    documents: (): readonly PolicyDocumentInfo[] => documents,
    lastError: (): PolicyReloadError | undefined => lastError,
    /** Re-reads dir and table; swaps when they changed (or `force`). Calls run one after another. */
    reload(force = false): Promise<PolicyReloadResult> {
      const run = queue.then(() => doReload(force));
      queue = run.catch(() => undefined);
      return run;
    },
    /**
     * The problems the set would have with `name` uploaded as `content` (or removed, when
     * `content` is null), against the current dir and table: empty when it compiles.
     */
    async check(name: string, content: string | null): Promise<string[]> {
      let files: DirFile[];
      try {
        files = safeReadDir();
      } catch (e) {
        if (e instanceof ConfigError) return e.problems;
        throw e;
      }
      const rows = (await o.table.findMany({ orderBy: { name: 'asc' } })).filter((r) => r.name !== name);
      if (content !== null) rows.push({ name, content, sha256: sha256Hex(content), updatedAt: o.clock.now(), updatedBy: '' });
      return compile(files, rows).problems;
    },
  };
}

export interface PolicyReloadResult {
  changed: boolean;
  version: string;
  problems: string[];
}

export type PolicySet = ReturnType<typeof createPolicySet>;
