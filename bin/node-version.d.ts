/** See node-version.js. */
export function nodeVersionProblem(version: string): string | undefined;
