// A Helia node (TCP + Noise + Yamux, Bitswap) for the interop tests, driven by JSON lines
// on stdin and answering one JSON line per command on stdout. The first line it prints is
// {"peer": <peer id>, "addrs": [<listen addresses with /p2p/>]}.
//   {"op":"add","path":FILE}                        -> {"cid":...}  (Helia's default importer)
//   {"op":"addDir","root":DIR,"profile":P?}         -> {"cid":...}  (a folder, as `addAll` imports it)
//   {"op":"carExport","cid":CID,"path":FILE}        -> {"bytes":N}  (@helia/car's export)
//   {"op":"carImport","path":FILE}                  -> {"roots":[...]}
//   {"op":"dial","addr":MULTIADDR}                  -> {"ok":true}
//   {"op":"cat","cid":CID,"path":FILE,"inner":P?,"timeout":MS?}
//                                                   -> {"bytes":N}  (fetched over Bitswap)
// Errors come back as {"error": "..."}.
import { createReadStream } from 'node:fs'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { car } from '@helia/car'
import { unixfs } from '@helia/unixfs'
import { CarReader } from '@ipld/car'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createHelia } from 'helia'
import { CID } from 'multiformats/cid'

const helia = await createHelia({
  libp2p: {
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() }
  },
  routers: []
})
await helia.start()
const fs = unixfs(helia)
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

async function run (cmd) {
  if (cmd.op === 'add') {
    return { cid: (await fs.addBytes(await readFile(cmd.path))).toString() }
  }
  if (cmd.op === 'addDir') {
    const options = cmd.profile != null ? { profile: cmd.profile } : {}
    let root = null
    for await (const entry of fs.addAll(folderEntries(cmd.root), options)) {
      if (entry.path === 'root') root = entry.cid
    }
    return { cid: root.toString() }
  }
  if (cmd.op === 'carExport') {
    const chunks = []
    for await (const buf of car(helia).export(CID.parse(cmd.cid))) chunks.push(buf)
    const data = Buffer.concat(chunks)
    await writeFile(cmd.path, data)
    return { bytes: data.length }
  }
  if (cmd.op === 'carImport') {
    const reader = await CarReader.fromIterable(createReadStream(cmd.path))
    await car(helia).import(reader)
    return { roots: (await reader.getRoots()).map(String) }
  }
  if (cmd.op === 'dial') {
    await helia.libp2p.dial(multiaddr(cmd.addr))
    return { ok: true }
  }
  if (cmd.op === 'cat') {
    const options = { signal: AbortSignal.timeout(cmd.timeout ?? 60000) }
    if (cmd.inner != null) options.path = cmd.inner
    const chunks = []
    for await (const chunk of fs.cat(cmd.cid, options)) chunks.push(chunk)
    const data = Buffer.concat(chunks)
    await writeFile(cmd.path, data)
    return { bytes: data.length }
  }
  throw new Error(`unknown op ${cmd.op}`)
}

// every file and folder under `dir` as importer entries below one top folder named 'root'
async function * folderEntries (dir) {
  const found = await readdir(dir, { recursive: true, withFileTypes: true })
  for (const item of found) {
    const rel = join(item.parentPath ?? item.path, item.name).slice(dir.length + 1)
    if (item.isDirectory()) yield { path: `root/${rel}` }
    else yield { path: `root/${rel}`, content: await readFile(join(dir, rel)) }
  }
}

say({ peer: helia.libp2p.peerId.toString(), addrs: helia.libp2p.getMultiaddrs().map(String) })
for await (const line of createInterface({ input: process.stdin })) {
  try {
    say(await run(JSON.parse(line)))
  } catch (err) {
    say({ error: String(err?.stack ?? err) })
  }
}
await helia.stop()
process.exit(0)
