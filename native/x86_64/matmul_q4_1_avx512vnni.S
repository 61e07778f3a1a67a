#define VNNI
#include "matmul_q4_1_avx512.S"
