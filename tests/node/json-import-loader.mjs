// The loader behind json-import-hook.mjs: resolve a .json URL with the import attribute {type: "json"}.
export async function resolve(specifier, context, nextResolve) {
  const resolved = await nextResolve(specifier, context);
  if (resolved.url.endsWith('.json')) {
    return { ...resolved, importAttributes: { ...(resolved.importAttributes ?? {}), type: 'json' } };
  }
  return resolved;
}
