// src/node.ts
import { readFile, rename, writeFile } from "node:fs/promises";
function fileStorage(path) {
  let data = {};
  let chain = Promise.resolve();
  let next;
  const save = () => next ??= chain = chain.catch(() => {
  }).then(async () => {
    next = void 0;
    await writeFile(path + ".tmp", JSON.stringify(data));
    await rename(path + ".tmp", path);
  });
  return {
    async load() {
      let text;
      try {
        text = await readFile(path, "utf8");
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
export {
  fileStorage
};
