/*
 * pyw_wire.h — pyworkers' interpreter-neutral value encoding ("wire format").
 *
 * Values cross between Go and CPython interpreters (and, later, through the C queues) as bytes in
 * this format, never as PyObject pointers: an encoded value belongs to no interpreter. The Go
 * side lives in internal/wire; both sides must agree byte for byte.
 *
 *   value   := tag payload
 *   'N'                          None / nil
 *   'T' | 'F'                    True / False
 *   'i' int64                    int that fits in 64 bits, 8 bytes little-endian two's complement
 *   'I' uvarint(n) bytes[n]      any other int: n bytes, little-endian two's complement, n >= 1
 *   'f' float64                  8 bytes, little-endian IEEE 754
 *   's' uvarint(n) bytes[n]      str, UTF-8 (valid, no surrogates)
 *   'b' uvarint(n) bytes[n]      bytes
 *   't' uvarint(n) value*n       tuple
 *   'l' uvarint(n) value*n       list
 *   'd' uvarint(n) (key value)*n dict; every key is a str value ('s')
 *   'B' uvarint(i)               a shared buffer, by reference: entry i of the table of buffers
 *                                that travels beside the bytes (never a pointer in the bytes)
 *
 * uvarint is the unsigned LEB128 encoding used by Go's encoding/binary. Nesting is limited to
 * PYW_MAX_DEPTH containers so that neither side can be driven into a stack overflow.
 */
#ifndef PYW_WIRE_H
#define PYW_WIRE_H

#define PYW_MAX_DEPTH 10000

#define PYW_TAG_NONE 'N'
#define PYW_TAG_TRUE 'T'
#define PYW_TAG_FALSE 'F'
#define PYW_TAG_INT 'i'
#define PYW_TAG_BIGINT 'I'
#define PYW_TAG_FLOAT 'f'
#define PYW_TAG_STR 's'
#define PYW_TAG_BYTES 'b'
#define PYW_TAG_TUPLE 't'
#define PYW_TAG_LIST 'l'
#define PYW_TAG_DICT 'd'
#define PYW_TAG_BUFFER 'B'

#endif
