#define VNNI
#include "matmul_q8_0_avx512.S"
