{
  "targets": [
    {
      "target_name": "batchgen_native",
      "sources": ["src/addon.cc", "src/panels.cc", "src/attention.cc", "src/rowops.cc"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fopenmp"],
      "libraries": ["-ldnnl", "-lgomp"]
    }
  ]
}
