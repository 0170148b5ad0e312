// TLS (SPEC §9): `Iodine.TLS` (certificate, trusted peers, ALPN) as Bun's TLS options for listeners
// and clients; PEM files for `--tls-cert/--tls-key`; and for `--tls` a self-signed ECDSA P-256
// certificate for localhost, made at start-up with WebCrypto and a few lines of DER (RFC 5280), so
// no OpenSSL binary or extra package is needed.
import type { BunFile, TLSOptions as BunTLSOptions } from "bun";
import { readFileSync } from "node:fs";
import { CliError, IodineError } from "./errors.ts";
import type { TLSOptions, TLSSettings } from "./types.ts";

// --- DER ---

function der(tag: number, ...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const len = parts.reduce((n, p) => n + p.length, 0);
  const head =
    len < 0x80 ? [tag, len] : len < 0x100 ? [tag, 0x81, len] : [tag, 0x82, len >> 8, len & 0xff];
  return concat([new Uint8Array(head), ...parts]);
}

function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const seq = (...parts: Uint8Array[]): Uint8Array<ArrayBuffer> => der(0x30, ...parts);
const bytes = (...b: number[]) => new Uint8Array(b);
const utf8 = (s: string) => new TextEncoder().encode(s);

function oid(dotted: string): Uint8Array {
  const [a, b, ...rest] = dotted.split(".").map(Number);
  const out = [a! * 40 + b!];
  for (const n of rest) {
    const chunk = [n & 0x7f];
    for (let v = n >> 7; v > 0; v >>= 7) chunk.unshift((v & 0x7f) | 0x80);
    out.push(...chunk);
  }
  return der(0x06, new Uint8Array(out));
}

/** A positive INTEGER from big-endian bytes (strip leading zeros, keep the sign bit clear). */
function uint(b: Uint8Array): Uint8Array {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  const v = b.subarray(i);
  return v[0]! & 0x80 ? der(0x02, bytes(0), v) : der(0x02, v);
}

function utcTime(d: Date): Uint8Array {
  const p = (n: number) => String(n).padStart(2, "0");
  const s =
    `${p(d.getUTCFullYear() % 100)}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}` +
    `${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
  return der(0x17, utf8(s));
}

const pem = (label: string, data: Uint8Array) =>
  `-----BEGIN ${label}-----\n${Buffer.from(data).toString("base64").replace(/.{64}/g, "$&\n").trimEnd()}\n-----END ${label}-----\n`;

// --- certificate ---

/** Makes a self-signed certificate for `localhost` and 127.0.0.1, valid for one year. */
export async function selfSigned(commonName = "localhost"): Promise<{ cert: string; key: string }> {
  const alg = { name: "ECDSA", namedCurve: "P-256" } as const;
  const keys = await crypto.subtle.generateKey(alg, true, ["sign", "verify"]);
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey));

  const ecdsaSha256 = seq(oid("1.2.840.10045.4.3.2"));
  const name = seq(der(0x31, seq(oid("2.5.4.3"), der(0x0c, utf8(commonName)))));
  const now = Date.now();
  const san = seq(der(0x82, utf8("localhost")), der(0x87, bytes(127, 0, 0, 1)));
  const tbs = seq(
    der(0xa0, der(0x02, bytes(2))), // version v3
    uint(crypto.getRandomValues(new Uint8Array(16))),
    ecdsaSha256,
    name,
    seq(utcTime(new Date(now - 86_400_000)), utcTime(new Date(now + 365 * 86_400_000))),
    name,
    spki,
    der(0xa3, seq(seq(oid("2.5.29.17"), der(0x04, san)))),
  );
  // WebCrypto signs as r‖s (IEEE P1363); X.509 wants SEQUENCE { INTEGER r, INTEGER s }.
  const rs = new Uint8Array(
    await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, keys.privateKey, tbs),
  );
  const signature = seq(uint(rs.subarray(0, 32)), uint(rs.subarray(32)));
  const cert = seq(tbs, ecdsaSha256, der(0x03, bytes(0), signature));
  return { cert: pem("CERTIFICATE", cert), key: pem("PRIVATE KEY", pkcs8) };
}

/** Reads `--tls-cert/--tls-key` (exit 2 naming the file when one can't be read). */
export function tlsFromFiles(certFile: string, keyFile: string, passphrase?: string): TLSOptions {
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file, "utf8");
    } catch (err) {
      throw new CliError(
        `cannot read the TLS ${what} "${file}": ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      );
    }
  };
  const cert = read(certFile, "certificate");
  const key = read(keyFile, "key");
  if (!cert.includes("-----BEGIN"))
    throw new CliError(`the TLS certificate "${certFile}" is not PEM`);
  if (!key.includes("-----BEGIN")) throw new CliError(`the TLS key "${keyFile}" is not PEM`);
  // Bun would fail later, in Bun.serve, with an OpenSSL code and a stack: check the pair here.
  // node:crypto is required only on this path: it costs about 5 ms of every start-up otherwise.
  const { createPrivateKey, X509Certificate } =
    require("node:crypto") as typeof import("node:crypto");
  let privateKey: import("node:crypto").KeyObject;
  try {
    privateKey = createPrivateKey(passphrase === undefined ? key : { key, passphrase });
  } catch (err) {
    const why = /decrypt|passphrase|password/i.test(String((err as Error).message))
      ? passphrase === undefined
        ? "it is encrypted: give --tls-pass"
        : "wrong --tls-pass"
      : (err as Error).message;
    throw new CliError(`cannot use the TLS key "${keyFile}": ${why}`);
  }
  let x509: import("node:crypto").X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new CliError(`cannot use the TLS certificate "${certFile}": ${(err as Error).message}`);
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new CliError(`the TLS key "${keyFile}" is not the key of the certificate "${certFile}"`);
  }
  return passphrase === undefined ? { cert, key } : { cert, key, passphrase };
}

// --- Iodine.TLS ---

type Pem = string | BunFile;

/** PEM text (it must look like PEM) or a `Bun.file` (read by Bun when the listener starts). */
function checkPem(value: unknown, what: string): Pem {
  if (typeof value === "string") {
    if (!value.includes("-----BEGIN"))
      throw new TypeError(
        `Iodine.TLS: ${what} must be PEM text or a Bun.file, got text without "-----BEGIN"`,
      );
    return value;
  }
  if (
    value !== null &&
    typeof value === "object" &&
    typeof (value as BunFile).arrayBuffer === "function" &&
    "name" in value
  ) {
    return value as BunFile;
  }
  throw new TypeError(
    `Iodine.TLS: ${what} must be PEM text or a Bun.file, got ${value === null ? "null" : typeof value}`,
  );
}

/** ALPN protocol names go on the wire as one length-prefixed list (RFC 7301 §3.1). */
function alpnWire(protocols: readonly string[]): Uint8Array {
  return concat(protocols.map(utf8).flatMap((p) => [bytes(p.length), p]));
}

/**
 * TLS settings for `Iodine.listen` (HTTP and raw) and `Iodine.connect` (SPEC §9), as iodine's
 * `Iodine::TLS`. A listener given a TLS object without a certificate gets a self-signed one at start.
 * @example
 * const tls = new Iodine.TLS().useCertificate({ cert: Bun.file("cert.pem"), key: Bun.file("key.pem") });
 * tls.trust(Bun.file("clients-ca.pem")); // only clients with a certificate signed by this CA get in
 * Iodine.listen({ port: 4433, tls, handler: () => new Echo() });
 */
export class TLS implements TLSSettings {
  #cert: Pem | undefined;
  #key: Pem | undefined;
  #pass: string | undefined;
  readonly #trusted: Pem[] = [];
  #alpn: string[] = [];

  /** The certificate (chain) and key this side presents: PEM text or `Bun.file`s. */
  useCertificate(o: { cert: Pem; key: Pem; pass?: string }): this {
    if (o === null || typeof o !== "object")
      throw new TypeError("Iodine.TLS.useCertificate: expected { cert, key, pass? }");
    this.#cert = checkPem(o.cert, "cert");
    this.#key = checkPem(o.key, "key");
    if (o.pass !== undefined && typeof o.pass !== "string")
      throw new TypeError(`Iodine.TLS.useCertificate: "pass" must be a string`);
    this.#pass = o.pass;
    return this;
  }

  /**
   * Trusts a certificate authority (or a self-signed certificate) for the peer. On a listener the
   * peer must then present a certificate it signed, or the connection is refused during the
   * handshake; on a client it replaces the system's CAs for verifying the server.
   */
  trust(ca: Pem): this {
    this.#trusted.push(checkPem(ca, "trust(ca)"));
    return this;
  }

  /**
   * The application protocols offered (client) or accepted (listener) by ALPN, most preferred
   * first, e.g. `"my-proto/1"`; a raw connection tells the agreed one as `client.alpnProtocol`.
   * HTTP listeners speak HTTP/1.1 whatever is set here.
   */
  alpn(...protocols: string[]): this {
    for (const p of protocols) {
      if (typeof p !== "string" || p.length === 0 || new TextEncoder().encode(p).length > 255) {
        throw new TypeError(
          `Iodine.TLS.alpn: a protocol name must be 1–255 bytes, got ${JSON.stringify(p)}`,
        );
      }
    }
    this.#alpn = protocols;
    return this;
  }

  /** True once `useCertificate` was called. */
  get hasCertificate(): boolean {
    return this.#cert !== undefined;
  }

  /** Gives a certificate-less TLS object a self-signed certificate for localhost (what `--tls` does). */
  async ensureCertificate(): Promise<void> {
    if (this.#cert !== undefined) return;
    const { cert, key } = await selfSigned();
    this.#cert = cert;
    this.#key = key;
  }

  /** Bun's TLS options for a listener (Bun.serve, Bun.listen). */
  serverOptions(): BunTLSOptions {
    if (this.#cert === undefined || this.#key === undefined) {
      throw new IodineError(
        "ETLS_NO_CERT",
        "Iodine.TLS: a listener needs a certificate (useCertificate, or let start make a self-signed one)",
      );
    }
    return {
      cert: this.#cert,
      key: this.#key,
      ...(this.#pass !== undefined ? { passphrase: this.#pass } : {}),
      ...(this.#trusted.length > 0
        ? { ca: this.#trusted, requestCert: true, rejectUnauthorized: true }
        : {}),
      ...(this.#alpn.length > 0 ? { ALPNProtocols: alpnWire(this.#alpn) } : {}),
    };
  }

  /** True when a listener with these settings asks clients for a certificate (`trust`). */
  get verifiesPeer(): boolean {
    return this.#trusted.length > 0;
  }

  /** Bun's TLS options for a client (Bun.connect, WebSocket). */
  clientOptions(): BunTLSOptions {
    return {
      ...(this.#cert !== undefined && this.#key !== undefined
        ? { cert: this.#cert, key: this.#key }
        : {}),
      ...(this.#pass !== undefined ? { passphrase: this.#pass } : {}),
      ...(this.#trusted.length > 0 ? { ca: this.#trusted } : {}),
      ...(this.#alpn.length > 0 ? { ALPNProtocols: alpnWire(this.#alpn) } : {}),
    };
  }
}

/** A listener's TLS as Bun wants it, from either an `Iodine.TLS` or plain `{ cert, key }`. */
export function serverTls(tls: TLSSettings | TLSOptions): BunTLSOptions {
  return tls instanceof TLS ? tls.serverOptions() : (tls as TLSOptions);
}
