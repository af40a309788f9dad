# ctest helper: every symbol a CPU variant's object exports must carry the
# variant's name (its namespace blendin::cpu::<name>, or the ABI tag
# [abi:<name>] of a shared inline function). The linker keeps a single copy
# of a symbol that several objects define, so a shared one could run code
# built for a wider ISA on a CPU that only runs the generic variant.
#   cmake -DNM=<nm> -DVARIANT=<name> -DOBJECT=<file.o> -P check_variant_symbols.cmake
execute_process(COMMAND "${NM}" --defined-only "${OBJECT}" OUTPUT_VARIABLE listing
                RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "${NM} failed on ${OBJECT}")
endif()
# Mangled names hold a name as <length><name>, e.g. 4avx2.
string(LENGTH "${VARIANT}" length)
set(marker "${length}${VARIANT}")
string(REPLACE "\n" ";" lines "${listing}")
set(leaks "")
set(checked 0)
foreach(line IN LISTS lines)
  # Global (upper case), unique (u) and weak (v, w) definitions.
  if(line MATCHES "^[0-9a-fA-F]* ([A-Zuvw]) ([^ ]+)$")
    set(symbol "${CMAKE_MATCH_2}")
    math(EXPR checked "${checked} + 1")
    string(FIND "${symbol}" "${marker}" at)
    if(at EQUAL -1 AND NOT symbol STREQUAL "DW.ref.__gxx_personality_v0")
      list(APPEND leaks "${symbol}")
    endif()
  endif()
endforeach()
if(checked EQUAL 0)
  message(FATAL_ERROR "no exported symbols found in ${OBJECT}")
endif()
if(leaks)
  list(JOIN leaks "\n  " text)
  message(FATAL_ERROR "${OBJECT} (variant ${VARIANT}) exports symbols without its name; "
                      "use Vector<T> / BLENDIN_HD or keep them internal:\n  ${text}")
endif()
message(STATUS "${VARIANT}: ${checked} exported symbols, all named for the variant")
