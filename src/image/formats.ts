// The image formats swiftvol reads (import) and writes (export) through QEMU's tools.
/** The formats an import reads (QEMU reads more; these are the ones clouds keep). */
export const IMAGE_FORMATS = ['raw', 'qcow2', 'vmdk', 'vhdx', 'vdi', 'vpc'] as const;
/** The formats an export writes. */
export const EXPORT_FORMATS = IMAGE_FORMATS;
