{
  "targets": [
    {
      "target_name": "privilege",
      "sources": ["privilege.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-std=c11"]
    }
  ]
}
