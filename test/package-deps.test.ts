/**
 * Every workspace package declares what its code imports (and imports what it declares):
 * installed from its tarball, outside this repository's hoisted node_modules, an
 * undeclared import would fail to resolve.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join, relative } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from './helpers/cli.js';

const WORKSPACES = ['shared', 'producer', 'workers'] as const;

/** Every module specifier a source file names as a string literal: imports, exports, import(), require(), require.resolve(), createRequire(…)(). */
function specifiersOf(fileName: string, source: string): string[] {
  const file = ts.createSourceFile(fileName, source, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const found: string[] = [];
  const literal = (node: ts.Node | undefined): void => {
    if (node !== undefined && ts.isStringLiteralLike(node)) found.push(node.text);
  };
  const loads = (callee: ts.Expression): boolean =>
    callee.kind === ts.SyntaxKind.ImportKeyword ||
    (ts.isIdentifier(callee) && callee.text === 'require') ||
    (ts.isPropertyAccessExpression(callee) && ts.isIdentifier(callee.expression) && callee.expression.text === 'require' && callee.name.text === 'resolve') ||
    (ts.isCallExpression(callee) && ts.isIdentifier(callee.expression) && callee.expression.text === 'createRequire');
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) literal(node.moduleSpecifier);
    else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) literal(node.moduleReference.expression);
    else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) literal(node.argument.literal);
    else if (ts.isCallExpression(node) && loads(node.expression)) literal(node.arguments[0]);
    ts.forEachChild(node, visit);
  };
  visit(file);
  return found;
}

/** The package a specifier loads, or undefined for a relative path or a Node built-in. */
function packageOf(specifier: string): string | undefined {
  if (specifier.startsWith('.') || specifier.startsWith('/') || specifier.startsWith('node:')) return undefined;
  const parts = specifier.split('/');
  const name = specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
  return builtinModules.includes(name) ? undefined : name;
}

interface Manifest {
  readonly name: string;
  readonly dependencies?: Record<string, string>;
  readonly peerDependencies?: Record<string, string>;
  readonly optionalDependencies?: Record<string, string>;
}

/** A package's imports against its manifest: imported but not declared, and declared but never imported. */
function checkDeps(manifest: Manifest, imports: ReadonlyMap<string, readonly string[]>): { undeclared: string[]; unused: string[] } {
  const declared = new Set([...Object.keys(manifest.dependencies ?? {}), ...Object.keys(manifest.peerDependencies ?? {}), ...Object.keys(manifest.optionalDependencies ?? {})]);
  const used = new Set<string>();
  const undeclared: string[] = [];
  for (const [file, specifiers] of imports) {
    for (const spec of specifiers) {
      const pkg = packageOf(spec);
      if (pkg === undefined || pkg === manifest.name) continue;
      used.add(pkg);
      if (!declared.has(pkg)) undeclared.push(`${file}: "${spec}"`);
    }
  }
  return { undeclared, unused: [...declared].filter((d) => !used.has(d)).sort() };
}

/** The imports of a workspace's shipped code (src/, tests excluded), by file. */
function workspaceImports(ws: string): Map<string, string[]> {
  const src = join(REPO_ROOT, ws, 'src');
  const out = new Map<string, string[]>();
  for (const entry of readdirSync(src, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !/\.[cm]?[jt]s$/.test(entry.name) || /\.test\.[cm]?[jt]s$/.test(entry.name)) continue;
    const path = join(entry.parentPath, entry.name);
    out.set(relative(REPO_ROOT, path), specifiersOf(path, readFileSync(path, 'utf8')));
  }
  return out;
}

const manifestOf = (ws: string): Manifest => JSON.parse(readFileSync(join(REPO_ROOT, ws, 'package.json'), 'utf8')) as Manifest;

describe('package dependencies', () => {
  for (const ws of WORKSPACES) {
    it(`${ws}: every import is a declared dependency, and every dependency is imported`, () => {
      const imports = workspaceImports(ws);
      expect(imports.size).toBeGreaterThan(0);
      const { undeclared, unused } = checkDeps(manifestOf(ws), imports);
      expect(undeclared, `imported by ${ws}/src but missing from ${ws}/package.json "dependencies"`).toEqual([]);
      expect(unused, `declared in ${ws}/package.json but never imported by ${ws}/src`).toEqual([]);
    });
  }

  it('the checker finds every way a file can load a package, and only real ones', () => {
    const source = `
      import a from 'pkg-a';
      import type { B } from '@scope/pkg-b/sub/path';
      import 'pkg-side-effect';
      export { c } from 'pkg-c/deep';
      export * as d from 'pkg-d';
      import e = require('pkg-e');
      type F = import('pkg-f').F;
      const g = await import('pkg-g');
      const h = require('pkg-h');
      const i = require.resolve('pkg-i');
      const j = createRequire(import.meta.url)('pkg-j/node');
      import { readFile } from 'node:fs/promises';
      import { join } from 'path';
      import { local } from './local.js';
      // import nope from 'in-a-comment';
      const text = "import nope from 'in-a-string'";
      const code = \`require('in-a-template')\`;
      const dynamic = require(someVariable);
    `;
    const pkgs = specifiersOf('x.ts', source).map(packageOf).filter((p) => p !== undefined);
    expect(pkgs.sort()).toEqual(['@scope/pkg-b', 'pkg-a', 'pkg-c', 'pkg-d', 'pkg-e', 'pkg-f', 'pkg-g', 'pkg-h', 'pkg-i', 'pkg-j', 'pkg-side-effect']);
  });

  it('the checker reports an undeclared import with its file, and a dependency nothing imports; its own name and built-ins need no entry', () => {
    const imports = new Map([
      ['src/a.ts', ['zod', 'node:fs', 'os', '@me/self', './b.js']],
      ['src/b.ts', ['yaml/util', '@other/pkg/x']],
    ]);
    const result = checkDeps({ name: '@me/self', dependencies: { zod: '^4', 'left-pad': '1.0.0' }, peerDependencies: { '@other/pkg': '*' } }, imports);
    expect(result.undeclared).toEqual(['src/b.ts: "yaml/util"']);
    expect(result.unused).toEqual(['left-pad']);
  });
});
