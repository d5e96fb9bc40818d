// Speaks a text file with Gnuspeech (the WebAssembly build in the npm package @echogarden/gnuspeech-wasm)
// into a 44.1 kHz WAV file:
//   node gnuspeech.mjs PACKAGE_DIR VOICE TEMPO TEXT_FILE WAV_FILE
// Run by models/tts/gnuspeech.py once per phrase; `make gnuspeech` installs the package. The package's own
// control-model settings are used with the voice and tempo set and its random intonation and drift turned
// off, so that the same text in the same voice always gives the same speech.
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const [packageDir, voice, tempo, textFile, wavFile] = process.argv.slice(2)
const settings = {
  voice_name: voice,
  tempo: Number(tempo),
  random_intonation: 0,
  intonation_drift: 0,
}

const dataDir = '/data/en'
let config = await readFile(join(packageDir, 'data', 'en', 'trm_control_model.txt'), 'utf8')
for (const [key, value] of Object.entries(settings)) {
  config = config.replace(new RegExp(`^${key} = .*$`, 'm'), `${key} = ${value}`)
}

const { default: initialise } = await import(pathToFileURL(join(packageDir, 'wasm', 'gnuspeech.js')).href)
const m = await initialise()
m.FS.writeFile(`${dataDir}/trm_control_model.txt`, config)

// C strings on the module's heap, freed when done.
const allocated = []
function cString(value) {
  const bytes = new TextEncoder().encode(value + '\0')
  const address = m._malloc(bytes.length)
  m.HEAPU8.set(bytes, address)
  allocated.push(address)
  return address
}

const text = await readFile(textFile, 'utf8')
m._GnuSpeech_synthesizeToFile(cString(text), cString('/out.wav'), cString(dataDir), cString('/out-params.txt'), 0)
allocated.forEach((address) => m._free(address))
await writeFile(wavFile, m.FS.readFile('/out.wav'))
