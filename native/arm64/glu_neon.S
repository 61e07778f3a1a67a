/* Gated activations, NEON: out[i] = act(gate[i]) * up[i], i < n, any n; out may be
 * gate or up.
 *
 * void lila_silu_mul_neon(const float *gate, const float *up, size_t n, float *out);
 * void lila_gelu_mul_neon(const float *gate, const float *up, size_t n, float *out);
 *
 * Both activations are g * sigmoid(z): silu has z = g; the tanh-approximated gelu
 * 0.5 g (1 + tanh(y)), y = sqrt(2/pi) (g + 0.044715 g^3), is g * sigmoid(2y), since
 * 0.5 (1 + tanh(y)) = 1 / (1 + exp(-2y)); z = g (k1 + k3 g^2) has g's sign (k1 + k3 g^2
 * > 0), and that form has no 1 + tanh cancellation for negative g.
 *
 * sigmoid(z) with e = exp(-|z|) (exp_neon.inc), which never overflows:
 *      z >= 0: 1 / (1 + e)        z < 0: e / (1 + e)
 * the numerator picked by g's sign bit (-0 too). The quotient has no fdiv (slow and
 * unpipelined on the Cortex-A72): r = frecpe(1 + e) refined by one Newton step
 * (frecps) to ~16 bits, q0 = num r, and one correction q = q0 + (num - q0 (1 + e)) r
 * whose residual is a fused multiply-subtract: q is the quotient to within a hair of
 * half an ulp, as a division would give it. Huge |z| (even z = +-inf from g^3) gives
 * e = 0 and so exactly 1 or 0: silu(-1e4) = -0, silu(1e4) = 1e4.
 *
 * Sixteen floats a step (four independent groups of four through the exp), then four,
 * then one at a time through the same body on lane 0 (steps_neon.inc), so nothing
 * outside the n floats is read or written. Every load of a step comes before its
 * stores, which is why out may alias an input.
 *
 * Registers (group i = 0..3): Gi = v28-v31 gate, and exp's (exp_neon.inc): EXi -|z|
 * then the numerator, ETi e then up, EUi 1 + e, EBi ECi the reciprocal and the
 * quotient; v8-v12 exp's constants, v13-v14 ours (d8-d15 saved).
 */
#include "exp_neon.inc"
#include "steps_neon.inc"

#define GATE    x0
#define UP      x1
#define N       x2      /* floats left */
#define OUT     x3

G0 .req v28
G1 .req v29
G2 .req v30
G3 .req v31
ONE      .req v13
SIGN     .req v14   /* silu: the sign bit, to make -|g| in one orr */
GELU_K   .req v14   /* gelu: k1, k3 in lanes 0, 1 */

        .section .rodata
        EXP_CONSTANTS
/* ONE, then SIGN (silu) or GELU_K (gelu) */
.Lsilu: .float  1.0, 1.0, 1.0, 1.0
        .long   0x80000000, 0x80000000, 0x80000000, 0x80000000
.Lgelu: .float  1.0, 1.0, 1.0, 1.0
        .float  1.5957691216057308, 0.0713548162726009, 0, 0   /* 2 sqrt(2/pi), times 0.044715 */

        .text

/* EXi = -|z|, from g */
        .macro  glu_arg i, gelu
        .if     \gelu
        fmul    EU\i\().4s, G\i\().4s, G\i\().4s
        dup     EX\i\().4s, GELU_K.s[0]
        fmla    EX\i\().4s, EU\i\().4s, GELU_K.s[1]     /* k1 + k3 g^2 */
        fmul    EX\i\().4s, EX\i\().4s, G\i\().4s       /* z = 2y */
        orr     EX\i\().4s, #0x80, lsl #24
        .else
        orr     EX\i\().16b, G\i\().16b, SIGN.16b
        .endif
        .endm

/* ECi = g * sigmoid(z), from e in ETi */
        .macro  glu_sigmoid i
        fadd    EU\i\().4s, ET\i\().4s, ONE.4s          /* 1 + e, in [1, 2] */
        cmlt    EX\i\().4s, G\i\().4s, #0               /* z < 0: g's sign bit */
        bsl     EX\i\().16b, ET\i\().16b, ONE.16b       /* numerator: e, else 1 */
        frecpe  EB\i\().4s, EU\i\().4s
        frecps  EC\i\().4s, EU\i\().4s, EB\i\().4s
        fmul    EB\i\().4s, EB\i\().4s, EC\i\().4s      /* r */
        fmul    EC\i\().4s, EX\i\().4s, EB\i\().4s      /* q0 */
        fmls    EX\i\().4s, EC\i\().4s, EU\i\().4s      /* num - q0 (1 + e) */
        fmla    EC\i\().4s, EX\i\().4s, EB\i\().4s      /* q */
        fmul    EC\i\().4s, EC\i\().4s, G\i\().4s
        .endm

/* ECi *= up, in ETi */
        .macro  glu_up i
        fmul    EC\i\().4s, EC\i\().4s, ET\i\().4s
        .endm

/* act(g) * up for the groups listed: g in Gi, up loaded into ETi once e is used up */
        .macro  GLU_BODY gelu, w, groups:vararg
        .irp    i, \groups
        glu_arg \i, \gelu
        .endr
        EXP_NEON \groups
        .irp    i, \groups
        glu_sigmoid \i
        .endr
        LDW     \w, UP, 4, 5, 6, 7
        .irp    i, \groups
        glu_up  \i
        .endr
        .endm

        .macro  GLU_STEP w, gelu
        LDW     \w, GATE, 28, 29, 30, 31
        .if     \w == 16
        GLU_BODY \gelu, \w, 0, 1, 2, 3
        .else
        GLU_BODY \gelu, \w, 0
        .endif
        STW     \w, OUT, 24, 25, 26, 27
        .endm
        .macro  silu_step w
        GLU_STEP \w, 0
        .endm
        .macro  gelu_step w
        GLU_STEP \w, 1
        .endm

        .macro  GLU name, step, consts
        .globl  \name
        .type   \name, %function
        .p2align 4
\name:
        PUSH_D8_D15
        EXP_LOAD x9
        adrp    x9, \consts
        add     x9, x9, :lo12:\consts
        ld1     {v13.4s, v14.4s}, [x9]
        STEPS   N, \step
        POP_D8_D15
        ret
        .size   \name, . - \name
        .endm

        GLU     lila_silu_mul_neon, silu_step, .Lsilu
        GLU     lila_gelu_mul_neon, gelu_step, .Lgelu

        .section .note.GNU-stack, "", %progbits
