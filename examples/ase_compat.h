/*
 * Constants include/ase.h should define but does not yet: cbindgen 0.29 skips
 * Rust constants written as `IdKind::Ip as u32` (src/ffi/types.rs), so the
 * ASE_ID_* kinds other than ASE_ID_NONE and the ASE_SOURCE_* sources other
 * than ASE_SOURCE_ALL are missing. The values are those of src/policy's enums.
 * Each is guarded, so this file does nothing once the header has them; delete
 * it then.
 */
#ifndef ASE_EXAMPLES_COMPAT_H
#define ASE_EXAMPLES_COMPAT_H

#ifndef ASE_H
#error "include ase.h before ase_compat.h"
#endif

#ifndef ASE_ID_IP
#define ASE_ID_IP 0
#endif
#ifndef ASE_ID_COOKIE
#define ASE_ID_COOKIE 1
#endif
#ifndef ASE_ID_TOKEN
#define ASE_ID_TOKEN 2
#endif
#ifndef ASE_ID_API_KEY
#define ASE_ID_API_KEY 3
#endif
#ifndef ASE_ID_USERNAME
#define ASE_ID_USERNAME 4
#endif
#ifndef ASE_SOURCE_MANUAL
#define ASE_SOURCE_MANUAL 0
#endif
#ifndef ASE_SOURCE_ABS
#define ASE_SOURCE_ABS 1
#endif
#ifndef ASE_SOURCE_DECOY
#define ASE_SOURCE_DECOY 2
#endif
#ifndef ASE_SOURCE_INVALID_PROTOCOL
#define ASE_SOURCE_INVALID_PROTOCOL 3
#endif
#ifndef ASE_SOURCE_INVALID_METHOD
#define ASE_SOURCE_INVALID_METHOD 4
#endif
#ifndef ASE_SOURCE_INVALID_CONTENT_TYPE
#define ASE_SOURCE_INVALID_CONTENT_TYPE 5
#endif

#endif /* ASE_EXAMPLES_COMPAT_H */
