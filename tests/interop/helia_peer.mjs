// A Helia node (TCP + Noise + Yamux, Bitswap) for the interop tests, driven by JSON lines
// on stdin and answering one JSON line per command on stdout. The first line it prints is
// {"peer": <peer id>, "addrs": [<listen addresses with /p2p/>]}.
//   {"op":"add","path":FILE}                        -> {"cid":...}  (Helia's default importer)
//   {"op":"addDir","root":DIR,"profile":P?}         -> {"cid":...}  (a folder, as `addAll` imports it)
//   {"op":"carExport","cid":CID,"path":FILE}        -> {"bytes":N}  (@helia/car's export)
//   {"op":"carImport","path":FILE}                  -> {"roots":[...]}
//   {"op":"gatewayCat","gateway":URL,"token":T,"cid":CID,"path":FILE,"inner":P?}
//                                                   -> {"bytes":N}  (blocks fetched from a trustless
//                                                      gateway by Helia's own gateway client)
//   {"op":"carVerify","url":URL,"token":T}          -> {"roots":[...],"blocks":[...]}  (a CAR response,
//                                                      parsed by @ipld/car, every block hashed)
//   {"op":"dial","addr":MULTIADDR}                  -> {"ok":true}
//   {"op":"cat","cid":CID,"path":FILE,"inner":P?,"timeout":MS?}
//                                                   -> {"bytes":N}  (fetched over Bitswap)
//   {"op":"gc"}                                     -> {"ok":true}  (drops every block not pinned)
// Errors come back as {"error": "..."}.
import { createReadStream } from 'node:fs'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { car } from '@helia/car'
import { fallbackRouter } from '@helia/fallback-router'
import { trustlessGatewayBlockBroker } from '@helia/trustless-gateway-client'
import { unixfs } from '@helia/unixfs'
import { CarBlockIterator, CarReader } from '@ipld/car'
import * as dagPb from '@ipld/dag-pb'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createHelia, createHeliaLight } from 'helia'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'

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
  if (cmd.op === 'gatewayCat') {
    // a file (raw leaves) read block by block through the gateway client, which checks each
    // block against its CID: the path's directories, then the file's nodes in order
    const client = await gatewayClient(cmd.gateway, cmd.token)
    const get = async (cid) => {
      const parts = []  // blockstores hand a block over in pieces
      for await (const part of client.blockstore.get(cid, { signal: AbortSignal.timeout(60000) })) parts.push(part)
      return Buffer.concat(parts)
    }
    let cid = CID.parse(cmd.cid)
    for (const name of (cmd.inner ?? '').split('/').filter(Boolean)) {
      const link = dagPb.decode(await get(cid)).Links.find(link => link.Name === name)
      if (link == null) throw new Error(`no ${name} below ${cid}`)
      cid = link.Hash
    }
    const chunks = []
    const stack = [cid]
    while (stack.length > 0) {
      const next = stack.pop()
      const bytes = await get(next)
      if (next.code === dagPb.code) stack.push(...dagPb.decode(bytes).Links.map(link => link.Hash).reverse())
      else chunks.push(bytes)
    }
    await writeFile(cmd.path, Buffer.concat(chunks))
    return { bytes: Buffer.concat(chunks).length }
  }
  if (cmd.op === 'carVerify') {
    const response = await fetch(cmd.url, { headers: { Authorization: `Bearer ${cmd.token}` } })
    if (!response.ok) throw new Error(`HTTP ${response.status}`)
    const blocks = await CarBlockIterator.fromIterable(response.body)
    const cids = []
    for await (const { cid, bytes } of blocks) {
      const digest = await sha256.digest(bytes)
      if (cid.multihash.code !== sha256.code || !equalBytes(digest.digest, cid.multihash.digest)) {
        throw new Error(`block ${cid} does not match its CID`)
      }
      cids.push(cid.toString())
    }
    return { roots: (await blocks.getRoots()).map(String), blocks: cids }
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
  if (cmd.op === 'gc') {
    await helia.gc()
    return { ok: true }
  }
  throw new Error(`unknown op ${cmd.op}`)
}

const gatewayClients = new Map()

// a Helia that fetches blocks only from one trustless gateway, with our bearer token
async function gatewayClient (url, token) {
  if (!gatewayClients.has(url)) {
    const client = await createHeliaLight({
      blockBrokers: [trustlessGatewayBlockBroker({
        allowInsecure: true,
        allowLocal: true,
        transformRequestInit: (init) => ({ ...init, headers: { ...init.headers, Authorization: `Bearer ${token}` } })
      })],
      // Helia's routing waits forever when no router but a fallback one is configured, so an
      // ordinary router that knows nobody goes first
      routers: [{ name: 'nobody', async * findProviders () {} }, fallbackRouter({ gateways: [url] })]
    })
    await client.start()
    gatewayClients.set(url, client)
  }
  return gatewayClients.get(url)
}

function equalBytes (a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i])
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
