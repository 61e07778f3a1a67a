#define VNNI
#include "matmul_q4_0_avx512.S"
