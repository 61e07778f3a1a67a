/* Q4_K weight x q8 activation products, AVX-512 VNNI: matmul_q4_k_avx512.S with vpdpbusd
 * (unsigned codes x signed activation codes, 4 products summed into each dword) in place
 * of vpmaddubsw + vpmaddwd. Symbols lila_gemv_q4_k_avx512vnni, lila_gemm_q4_k_avx512vnni. */
#define VNNI 1
#include "matmul_q4_k_avx512.S"
