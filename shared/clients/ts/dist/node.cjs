"use strict";
var __defProp = Object.defineProperty;
var __getOwnPropDesc = Object.getOwnPropertyDescriptor;
var __getOwnPropNames = Object.getOwnPropertyNames;
var __hasOwnProp = Object.prototype.hasOwnProperty;
var __export = (target, all) => {
  for (var name in all)
    __defProp(target, name, { get: all[name], enumerable: true });
};
var __copyProps = (to, from, except, desc) => {
  if (from && typeof from === "object" || typeof from === "function") {
    for (let key of __getOwnPropNames(from))
      if (!__hasOwnProp.call(to, key) && key !== except)
        __defProp(to, key, { get: () => from[key], enumerable: !(desc = __getOwnPropDesc(from, key)) || desc.enumerable });
  }
  return to;
};
var __toCommonJS = (mod) => __copyProps(__defProp({}, "__esModule", { value: true }), mod);

// src/node.ts
var node_exports = {};
__export(node_exports, {
  fileStorage: () => fileStorage
});
module.exports = __toCommonJS(node_exports);
var import_promises = require("node:fs/promises");
function fileStorage(path) {
  let data = {};
  let chain = Promise.resolve();
  let next;
  const save = () => next ??= chain = chain.catch(() => {
  }).then(async () => {
    next = void 0;
    await (0, import_promises.writeFile)(path + ".tmp", JSON.stringify(data));
    await (0, import_promises.rename)(path + ".tmp", path);
  });
  return {
    async load() {
      let text;
      try {
        text = await (0, import_promises.readFile)(path, "utf8");
      } catch (e) {
        if (e.code !== "ENOENT") throw e;
        return data = {};
      }
      let parsed;
      try {
        parsed = JSON.parse(text);
      } catch (e) {
        throw new Error(`${path} is not JSON (${e.message}): the client's storage file is damaged`);
      }
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error(`${path} holds no JSON object: the client's storage file is damaged`);
      data = parsed;
      return { ...data };
    },
    set(k, v) {
      data[k] = JSON.parse(JSON.stringify(v));
      return save();
    },
    remove(k) {
      delete data[k];
      return save();
    },
    // One rename: all of it or none.
    write(sets, removes) {
      for (const k in sets) data[k] = JSON.parse(JSON.stringify(sets[k]));
      for (const k of removes) delete data[k];
      return save();
    }
  };
}
// Annotate the CommonJS export names for ESM import in node:
0 && (module.exports = {
  fileStorage
});
