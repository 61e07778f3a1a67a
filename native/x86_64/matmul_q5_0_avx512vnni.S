#define VNNI
#include "matmul_q5_0_avx512.S"
