# Included by the top-level CMakeLists.txt when S0_FUZZ=ON: libFuzzer harnesses (clang) for the
# parsers that need no libtorch, each linked with only the sources it needs, all under
# AddressSanitizer + UndefinedBehaviorSanitizer (UB aborts: -fno-sanitize-recover).
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "S0_FUZZ=ON needs clang (libFuzzer): configure with -DCMAKE_CXX_COMPILER=clang++")
endif()
find_package(nlohmann_json 3 REQUIRED)
find_package(Threads REQUIRED)
find_package(ICU REQUIRED COMPONENTS uc i18n)
find_package(ZLIB REQUIRED)
find_package(SQLite3 REQUIRED)

set(S0_SAN_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g)
set(S0_FUZZ_CORE_SOURCES
  src/s0/io/atomic_file.cpp src/s0/io/safetensors.cpp src/s0/io/model_dir.cpp
  src/s0/models/qwen35_config.cpp src/s0/models/falcon_h1_config.cpp src/s0/models/qwen2_config.cpp
  src/s0/text/tokenizer.cpp src/s0/text/tokenizer_writer.cpp src/s0/text/chat_template.cpp
  src/s0/text/jinja.cpp src/s0/text/jinja_eval.cpp src/s0/text/jinja_filters.cpp
  src/s0/text/jinja_lexer.cpp src/s0/text/jinja_parser.cpp src/s0/text/jinja_value.cpp
  src/s0/train/data.cpp
  src/s0/eval/tasks.cpp src/s0/eval/checkers.cpp src/s0/eval/sandbox.cpp)
add_library(s0fuzzcore STATIC ${S0_FUZZ_CORE_SOURCES})
target_include_directories(s0fuzzcore PUBLIC src)
target_compile_options(s0fuzzcore PUBLIC ${S0_SAN_FLAGS} -fsanitize=fuzzer-no-link)
target_link_libraries(s0fuzzcore PUBLIC nlohmann_json::nlohmann_json Threads::Threads ICU::i18n ICU::uc
  ZLIB::ZLIB SQLite::SQLite3)

file(GLOB S0_FUZZ_HARNESSES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_*.cpp)
foreach(src ${S0_FUZZ_HARNESSES})
  get_filename_component(name ${src} NAME_WE)
  if(name STREQUAL "fuzz_serve" OR name STREQUAL "fuzz_state_set" OR name STREQUAL "fuzz_adapters")  # need libtorch: plain driver only
    continue()
  endif()
  add_executable(${name} ${src})
  target_compile_definitions(${name} PRIVATE S0_FUZZ_SOURCE_DIR="${CMAKE_CURRENT_SOURCE_DIR}")
  target_link_libraries(${name} PRIVATE s0fuzzcore)
  target_link_options(${name} PRIVATE ${S0_SAN_FLAGS} -fsanitize=fuzzer)
endforeach()
