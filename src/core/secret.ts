/**
 * A value that must never be logged, serialised or printed. Every `reveal()` call site is a
 * place where a secret leaves this wrapper on purpose; grep for it when reviewing.
 */
export class Secret<T> {
  readonly #value: T;
  constructor(value: T) {
    this.#value = value;
  }
  reveal(): T {
    return this.#value;
  }
  toJSON(): string {
    return '[redacted]';
  }
  toString(): string {
    return '[redacted]';
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return 'Secret([redacted])';
  }
}
