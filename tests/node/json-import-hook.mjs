// Node 20 needs an import attribute on JSON imports; @actions/workflow-parser imports its schema JSON without one
// (newer Node versions relaxed that). This hook adds `with {type: "json"}` to every import of a .json URL.
//
//   node --import ./json-import-hook.mjs workflow-parser.mjs FILE...
import { register } from 'node:module';

register('./json-import-loader.mjs', import.meta.url);
